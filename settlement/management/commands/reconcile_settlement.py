"""Compare a settlement run with what Stripe holds; prints `clean` or each difference."""

from django.core.management.base import BaseCommand, CommandError

from settlement import selectors, stripe_gateway
from settlement.errors import CoalitionError
from settlement.services import run_reconcile


class Command(BaseCommand):
    help = (
        "Reconcile a settlement run with Stripe (transfers in its transfer group, its "
        "payments) and store the result. Exits 1 when differences are found."
    )

    def add_arguments(self, parser):
        parser.add_argument("run_id", type=int, help="The settlement run's id")

    def handle(self, *args, run_id: int, **options):
        try:
            run = selectors.run_get(run_id=run_id)
            result = run_reconcile(run=run)
        except CoalitionError as error:
            raise CommandError(error.message) from error
        except stripe_gateway.GatewayError as error:
            raise CommandError(f"Stripe: {error.message}") from error
        for difference in result.differences:
            self.stdout.write(
                f"{difference['kind']}: {difference['message']} (line {difference['line']}, "
                f"stripe {difference['stripe_id']}, expected {difference['expected']}, "
                f"actual {difference['actual']})"
            )
        if result.clean:
            self.stdout.write(
                f"run {run.pk} reconciled clean: {result.checked_lines} lines, "
                f"{result.stripe_objects} Stripe objects"
            )
            return
        self.stdout.write(f"run {run.pk}: {len(result.differences)} difference(s)")
        raise SystemExit(1)
