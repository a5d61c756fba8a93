"""Seed the demo coalition. Idempotent: a second run adds nothing."""

from django.core.management.base import BaseCommand, CommandError

from api.demo import MEMBERS, NotADemo, seed


class Command(BaseCommand):
    help = "Create the demo coalition: brands, charities, members, activity, settlement."

    def add_arguments(self, parser):
        parser.add_argument("--members", type=int, default=MEMBERS)
        parser.add_argument("--days", type=int, default=90)

    def handle(self, *args, **options):
        if not 1 <= options["members"] <= 100_000 or not 1 <= options["days"] <= 365:
            self.stderr.write("--members must be 1..100000 and --days 1..365")
            raise SystemExit(2)
        try:
            report = seed(stdout=self.stdout, members=options["members"], days=options["days"])
        except NotADemo as refusal:
            raise CommandError(str(refusal)) from refusal
        self.stdout.write(f"demo coalition: {report.summary()}")
