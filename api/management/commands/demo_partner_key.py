"""Print a new API key for a demo partner (keys are stored hashed and shown only once)."""

from django.core.management.base import BaseCommand, CommandError

from coalition.errors import CoalitionError
from partners.services import api_key_create, partner_get_by_code


class Command(BaseCommand):
    help = "Create and print a new API key (all scopes) for a partner, e.g. the demo grocer."

    def add_arguments(self, parser):
        parser.add_argument("code")
        parser.add_argument("--name", default="demo")

    def handle(self, *args, **options):
        try:
            partner = partner_get_by_code(code=options["code"])
        except CoalitionError as error:
            raise CommandError(error.message) from error
        _key, raw_key = api_key_create(partner=partner, name=options["name"])
        self.stdout.write(raw_key)
