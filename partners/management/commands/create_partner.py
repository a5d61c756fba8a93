"""Onboard a partner brand; prints its new API key (shown once, stored hashed)."""

import re

from django.core.management.base import BaseCommand, CommandError

from coalition.errors import CoalitionError
from partners.services import partner_create

REQUIRED = ("code", "name", "currency", "earn_rate", "issuance_price", "redemption_price")


class Command(BaseCommand):
    help = "Create a partner with its commercial terms and an API key (printed once)."

    def add_arguments(self, parser):
        # Required options are checked in handle(), so that a missing one is one clear line
        # on stderr like every other refusal (argparse would print the whole usage).
        parser.add_argument("--code", help="Unique upper-case slug, e.g. GROCER (required)")
        parser.add_argument("--name", help="The brand's name (required)")
        parser.add_argument("--currency", help="ISO 4217, e.g. USD (required)")
        parser.add_argument("--earn-rate", help="Base points per currency unit (required)")
        parser.add_argument("--issuance-price", help="Paid per point issued (required)")
        parser.add_argument("--redemption-price", help="Reimbursed per point (required)")
        parser.add_argument("--stripe-account", default="", help="Connect account acct_…")
        parser.add_argument("--stripe-customer", default="", help="Customer cus_… for collections")
        parser.add_argument("--contact-email", default="")
        parser.add_argument(
            "--allow-redemption-above-issuance",
            action="store_true",
            help="Accept a redemption price above the issuance price",
        )

    def handle(self, *args, **options):
        for name in REQUIRED:
            if not options.get(name):
                raise CommandError(f"--{name.replace('_', '-')} is required")
        try:
            _partner, raw_key = partner_create(
                code=options["code"],
                name=options["name"],
                currency=options["currency"],
                earn_rate=options["earn_rate"],
                issuance_price=options["issuance_price"],
                redemption_price=options["redemption_price"],
                stripe_account_id=options["stripe_account"],
                stripe_customer_id=options["stripe_customer"],
                contact_email=options["contact_email"],
                allow_redemption_above_issuance=options["allow_redemption_above_issuance"],
            )
        except CoalitionError as error:
            option = f"{_option_name(error.field)}: " if error.field else ""
            raise CommandError(f"{option}{error.message}") from error
        self.stdout.write(raw_key)


def _option_name(field: str) -> str:
    """The command-line option for a service field: earnRate → --earn-rate."""
    return "--" + re.sub(r"(?<!^)([A-Z])", r"-\1", field).lower()
