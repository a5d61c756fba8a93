"""Onboard a charity, verified (the operator running this vouches for it); prints its
GraphQL global id as the last line."""

import re

from django.core.management.base import BaseCommand, CommandError
from graphql_relay import to_global_id

from charity.models import Charity
from charity.services import charity_create
from coalition.errors import CoalitionError

REQUIRED = ("name", "registration_number", "cause")


class Command(BaseCommand):
    help = "Create a verified charity and print its GraphQL id."

    def add_arguments(self, parser):
        # Required options are checked in handle(), so that a missing one is one clear line
        # on stderr like every other refusal.
        parser.add_argument("--name", help="The charity's name")
        parser.add_argument("--registration-number", help="Unique per country")
        parser.add_argument("--cause", help="A cause code or name, e.g. health")
        parser.add_argument("--stripe-account", default="", help="Connect account acct_…")
        parser.add_argument("--country", default="US", help="ISO 3166 code (default US)")
        parser.add_argument("--description", default="")
        parser.add_argument("--website", default="")
        parser.add_argument("--logo-url", default="")

    def handle(self, *args, **options):
        for name in REQUIRED:
            if not options.get(name):
                raise CommandError(f"--{name.replace('_', '-')} is required")
        try:
            charity = charity_create(
                name=options["name"],
                registration_number=options["registration_number"],
                cause=options["cause"],
                country=options["country"],
                description=options["description"],
                website=options["website"],
                logo_url=options["logo_url"],
                stripe_account_id=options["stripe_account"],
                status=Charity.Status.VERIFIED,
                reason="created verified by manage.py create_charity",
            )
        except CoalitionError as error:
            option = f"{_option_name(error.field)}: " if error.field else ""
            raise CommandError(f"{option}{error.message}") from error
        self.stdout.write(to_global_id("Charity", str(charity.pk)))


def _option_name(field: str) -> str:
    """The command-line option for a service field: registrationNumber → --registration-number."""
    option = "--" + re.sub(r"(?<!^)([A-Z])", r"-\1", field).lower()
    return {"--stripe-account-id": "--stripe-account"}.get(option, option)
