from django.core.management.base import BaseCommand

from coalition.selectors import ledger_check


class Command(BaseCommand):
    help = "Prove the points ledger's invariants; list every breach and exit 1 if any."

    def handle(self, *args, **options):
        report = ledger_check()
        if report.problems:
            for problem in report.problems:
                self.stderr.write(problem)
            self.stdout.write(f"ledger broken: {len(report.problems)} problems")
            raise SystemExit(1)
        self.stdout.write(
            f"ledger ok: {report.transactions} transactions, {report.entries} entries"
        )
