"""Onboard a partner brand; prints its new API key (shown once, stored hashed)."""

import re

from django.core.management.base import BaseCommand, CommandError

from coalition.errors import CoalitionError
from partners.services import partner_create


class Command(BaseCommand):
    help = "Create a partner with its commercial terms and an API key (printed once)."

    def add_arguments(self, parser):
        parser.add_argument("--code", required=True, help="Unique upper-case slug, e.g. GROCER")
        parser.add_argument("--name", required=True)
        parser.add_argument("--currency", required=True, help="ISO 4217, e.g. USD")
        parser.add_argument("--earn-rate", required=True, help="Base points per currency unit")
        parser.add_argument("--issuance-price", required=True, help="Paid per point issued")
        parser.add_argument("--redemption-price", required=True, help="Reimbursed per point")
        parser.add_argument("--stripe-account", default="", help="Connect account acct_…")
        parser.add_argument("--stripe-customer", default="", help="Customer cus_… for collections")
        parser.add_argument("--contact-email", default="")
        parser.add_argument(
            "--allow-redemption-above-issuance",
            action="store_true",
            help="Accept a redemption price above the issuance price",
        )

    def handle(self, *args, **options):
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
