"""manage.py import_purchases PARTNER FILE.csv [--result FILE.csv] [--chunk 1000] [--sync]

Records a partner's end-of-day purchase file (see partners/imports.py for the format). The
file is checked and split into chunks, and the chunks go to the Celery workers; with --sync,
or when tasks run eagerly (no broker), they are recorded here, in this process, with the
progress shown. A file sent again adds nothing: every row keeps its idempotency key.

Exit status 0 when the file was taken (rejected rows are listed in the result file), 1 with
one line on standard error when it cannot be (unknown partner, missing file, bad header, a
result file that is the file itself or cannot be written; nothing is recorded then), or when
a chunk recorded here fails (the import is marked failed; rows recorded stay recorded, and
sending the file again replays them and records the rest).
"""

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from coalition.errors import CoalitionError
from partners.imports import (
    DEFAULT_CHUNK,
    ImportFileError,
    chunk_failure_reason,
    import_chunk_process,
    purchase_file_scan,
    purchase_import_create,
    purchase_import_enqueue,
    purchase_import_fail,
    purchase_import_result_check,
)
from partners.models import PurchaseImport
from partners.services import partner_get_by_code

PROGRESS_EVERY = 1.0  # seconds between progress lines


class Command(BaseCommand):
    help = "Record a partner's CSV file of purchases, in chunks (Celery, or here with --sync)."

    def add_arguments(self, parser):
        parser.add_argument("partner", help="The partner's code.")
        parser.add_argument("file", help="The CSV file.")
        parser.add_argument("--result", help="Where to write the per-row result CSV.")
        parser.add_argument(
            "--chunk", type=int, default=DEFAULT_CHUNK, help="Purchases per chunk (1–1000)."
        )
        parser.add_argument(
            "--sync", action="store_true", help="Record the chunks here, not on the workers."
        )

    def handle(self, *args, **options):
        try:
            partner = partner_get_by_code(code=options["partner"])
        except CoalitionError as exc:
            raise CommandError(exc.message) from exc
        try:
            if options["result"]:
                purchase_import_result_check(path=options["file"], result_path=options["result"])
            scan = purchase_file_scan(path=options["file"], chunk_size=options["chunk"])
            purchase_import = purchase_import_create(
                partner=partner,
                path=options["file"],
                chunk_size=options["chunk"],
                result_path=options["result"],
                scan=scan,
            )
        except ImportFileError as exc:
            raise CommandError(str(exc)) from exc
        if options["sync"] or settings.CELERY_TASK_ALWAYS_EAGER:
            self._run_here(purchase_import)
        else:
            sent = purchase_import_enqueue(purchase_import=purchase_import)
            self.stdout.write(
                f"import #{purchase_import.pk}: {purchase_import.total_rows} rows in {sent} "
                f"chunks sent to the workers; the result will be {purchase_import.result_path}"
            )

    def _run_here(self, purchase_import: PurchaseImport) -> None:
        total = purchase_import.total_rows
        self.stdout.write(
            f"import #{purchase_import.pk}: {total} rows of {purchase_import.file_name} "
            f"for {purchase_import.partner.code}"
        )
        started = last_shown = time.monotonic()
        processed = 0
        chunks = purchase_import.chunks.order_by("start_row").values_list("start_row", "row_count")
        for start_row, row_count in list(chunks):
            try:
                import_chunk_process(
                    import_id=purchase_import.pk, start_row=start_row, count=row_count
                )
            except Exception as exc:  # told as one line, the import marked failed
                reason = chunk_failure_reason(start_row, row_count, exc)
                purchase_import_fail(import_id=purchase_import.pk, reason=reason)
                raise CommandError(
                    f"import #{purchase_import.pk} failed: {reason} "
                    f"(the {processed} rows before it were recorded)"
                ) from exc
            processed += row_count
            if time.monotonic() - last_shown >= PROGRESS_EVERY or processed == total:
                last_shown = time.monotonic()
                self._progress(processed, total, last_shown - started)
        purchase_import.refresh_from_db()
        elapsed = time.monotonic() - started
        rate = purchase_import.processed_rows / elapsed if elapsed > 0 else 0.0
        self.stdout.write(
            f"import #{purchase_import.pk} {purchase_import.status}: "
            f"{purchase_import.processed_rows}/{total} rows, "
            f"{purchase_import.accepted} accepted, {purchase_import.rejected} rejected, "
            f"{elapsed:.1f} s ({rate:,.0f} rows/s); result: {purchase_import.result_path}"
        )

    def _progress(self, processed: int, total: int, elapsed: float) -> None:
        rate = processed / elapsed if elapsed > 0 else 0.0
        self.stdout.write(f"processed {processed}/{total} rows ({rate:,.0f} rows/s)")
