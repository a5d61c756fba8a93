"""End-of-day purchase files: millions of rows, recorded in chunks by Celery workers.

The file is CSV (UTF-8, optional BOM) with a header naming its columns, in any order:

    idempotency_key, member_number, amount, currency, reference     required
    occurred_at (ISO 8601), store_code, line_items (JSON list)      optional

Other columns are ignored. Each row is one purchase with its own idempotency key, recorded
by `purchases_record_batch` with the rules and error codes of `purchase_record`; a file sent
again therefore adds nothing (every row comes back accepted, replayed, with the same
transaction).

`purchase_file_scan` reads the file once: it checks the header, counts the rows and notes
where every chunk of rows starts and ends in the file (a quoted field may hold line
breaks), so that a worker reads its chunk alone. `purchase_import_create` records the import
and its chunks; `purchase_import_enqueue` hands the chunks to Celery
(`partners.tasks.import_purchases_chunk`). `import_chunk_process` records one chunk, writes
its part of the result, counts it once (a chunk run twice records nothing new and is not
counted again), and the chunk that completes the file assembles the result CSV:

    row, idempotency_key, status, replayed, transaction_id, points, error_code,
    error_field, error_message

`row` is the data row's number in the file (1 = the first row after the header; blank lines
are not rows). The workers need the file and the import folder (`PURCHASE_IMPORT_DIR`,
default var/imports/) on a shared volume.

Bad input never stops a file half-way. A row that cannot be read (bytes that are not UTF-8,
NUL characters, a field longer than `csv.field_size_limit()`, a stray CR, `line_items` that
is not JSON or is nested too deeply) is rejected alone (INVALID, with the reason). A file
that cannot be read at all (no header, missing columns, CR-only line breaks, a result file
that is the file itself or cannot be written) is refused before anything is recorded
(ImportFileError). A chunk that fails otherwise marks the import failed, saying why
(`purchase_import_fail`); what was recorded stays recorded, and the file sent again
replays it.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gc
import io
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Sum
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from coalition.audit import audit_record, object_type_of
from coalition.models import AuditEvent

from .models import Partner, PurchaseImport, PurchaseImportChunk
from .services.batch import MAX_PURCHASES, PurchaseOutcome, purchases_record_batch

REQUIRED_COLUMNS = ("idempotency_key", "member_number", "amount", "currency", "reference")
OPTIONAL_COLUMNS = ("occurred_at", "store_code", "line_items")
RESULT_COLUMNS = (
    "row",
    "idempotency_key",
    "status",
    "replayed",
    "transaction_id",
    "points",
    "error_code",
    "error_field",
    "error_message",
)
DEFAULT_CHUNK = 1000
# What the task retries (partners.tasks.import_purchases_chunk): the file share, the
# database. Any other error fails the import at once.
TRANSIENT_ERRORS = (OSError, OperationalError, InterfaceError)
FAILED_ACTION = "partners.purchase_import.failed"
MAX_REASON = 500

logger = logging.getLogger(__name__)


class ImportFileError(Exception):
    """The file cannot be imported at all (missing, unreadable, or a bad header)."""


def import_dir() -> Path:
    """Where uploaded files, result parts and results live (shared with the workers)."""
    configured = getattr(settings, "PURCHASE_IMPORT_DIR", None)
    return Path(configured) if configured else Path(settings.BASE_DIR) / "var" / "imports"


# --------------------------------------------------------------------------- reading


# Why a row cannot be read, as the result file says it (error_code INVALID).
NOT_UTF8 = "The row is not UTF-8 text: save the file as UTF-8"
NUL_TEXT = "The row contains NUL characters"
USED_COLUMNS = frozenset(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
# A file's first line break is looked for in this many bytes (a file with CR-only line
# breaks is one long line to a reader of lines).
HEAD_BYTES = 64 * 1024


def _csv_problem(exc: csv.Error) -> str:
    """What a csv.Error means to whoever wrote the file."""
    reason = str(exc)
    if reason.startswith("field larger than field limit"):
        return f"A field is longer than {csv.field_size_limit():,} characters"
    if reason.startswith("new-line character seen in unquoted field"):
        return "A line break (CR) inside an unquoted field: quote the field"
    return f"The row is not valid CSV: {reason}"


def _records(handle: BinaryIO, position: int) -> Iterator[tuple[int, list[str], str]]:
    """(end, fields, problem) of every CSV record from the handle's position (`position`).

    The scan and the workers both read the file through this, so they agree on where every
    record ends: `csv.reader`'s rules (a quote opens a quoted field only at the field's start,
    so `12" pizza` is text), fed one line at a time, which it asks for only while a quoted
    field is open. `end` is the byte after the record. `fields` is [] for a blank line. A
    record that cannot be read is still a record (a rejected row): `problem` says why, and
    the reader starts again at the next line, as `csv.reader` does. A row with bytes that are
    not UTF-8 has `problem` NOT_UTF8 (its fields keep those bytes as lone surrogates).
    """
    where = [position, False]  # the byte after the last line read; a line was not UTF-8

    def text_lines() -> Iterator[str]:
        for line in handle:
            where[0] += len(line)
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError:
                where[1] = True
                yield line.decode("utf-8", "surrogateescape")

    reader = csv.reader(text_lines())
    while True:
        try:
            fields = next(reader)
            problem = NOT_UTF8 if where[1] else ""
        except StopIteration:
            return
        except csv.Error as exc:
            fields, problem = [], _csv_problem(exc)
        where[1] = False
        yield where[0], fields, problem


def _lone_cr_line_breaks(head: bytes) -> bool:
    """Whether the file's first line break is a CR alone (old Mac style)."""
    cr = head.find(b"\r")
    if cr < 0 or cr + 1 >= len(head):
        return False
    lf = head.find(b"\n")
    return head[cr + 1] != 0x0A and (lf < 0 or cr < lf)


def _header(fields: list[str], problem: str) -> list[str]:
    if problem == NOT_UTF8:
        raise ImportFileError("the header is not UTF-8 text")
    if problem:
        raise ImportFileError(f"the header cannot be read: {problem}")
    return [column.strip().lower() for column in fields]


@dataclass
class FileScan:
    columns: list[str]
    total_rows: int
    # (start row, row count, first byte, end byte) of every chunk
    chunks: list[tuple[int, int, int, int]] = field(default_factory=list)


def purchase_file_scan(*, path: str | Path, chunk_size: int = DEFAULT_CHUNK) -> FileScan:
    """Check a purchase file's header and find its rows and chunks (nothing is recorded).

    Raises ImportFileError, with one line saying what is wrong, for a file that cannot be
    imported.
    """
    if not 1 <= chunk_size <= MAX_PURCHASES:
        raise ImportFileError(f"the chunk size must be from 1 to {MAX_PURCHASES}")
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ImportFileError(f"{path}: {exc.strerror or exc}") from exc
    with handle:
        head = handle.read(HEAD_BYTES)
        if _lone_cr_line_breaks(head):
            raise ImportFileError(
                f"{path.name}: the lines end with CR alone: save the file with LF or CRLF "
                "line breaks"
            )
        # A byte-order mark is not part of the first column's name.
        position = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
        handle.seek(position)
        records = _records(handle, position)
        header = next(((end, f, p) for end, f, p in records if f or p), None)
        if header is None:
            raise ImportFileError(f"{path.name}: the file is empty (no header)")
        try:
            columns = _header(header[1], header[2])
        except ImportFileError as exc:
            raise ImportFileError(f"{path.name}: {exc}") from exc
        missing = [column for column in REQUIRED_COLUMNS if column not in columns]
        if missing:
            raise ImportFileError(f"{path.name}: missing columns: {', '.join(missing)}")
        repeated = sorted({column for column in columns if column and columns.count(column) > 1})
        if repeated:
            raise ImportFileError(f"{path.name}: repeated columns: {', '.join(repeated)}")
        scan = FileScan(columns=columns, total_rows=0)
        chunk_start = chunk_rows = 0
        chunk_byte = None
        start = chunk_end = header[0]
        for end, fields, problem in records:
            if fields or problem:  # not a blank line
                if chunk_byte is None:
                    chunk_byte = start
                chunk_rows += 1
                chunk_end = end
                if chunk_rows == chunk_size:
                    scan.chunks.append((chunk_start, chunk_rows, chunk_byte, chunk_end))
                    chunk_start += chunk_rows
                    chunk_rows = 0
                    chunk_byte = None
            start = end
        if chunk_rows:
            scan.chunks.append((chunk_start, chunk_rows, chunk_byte, chunk_end))
        scan.total_rows = chunk_start + chunk_rows
    return scan


def _chunk_rows(
    purchase_import: PurchaseImport, chunk: PurchaseImportChunk
) -> tuple[list[list[str]], dict[int, str]]:
    """The chunk's rows, and why those that cannot be read cannot (by position in the chunk).

    Read by the scan's rules: `csv.reader` over the same lines (a StringIO splits at LF
    alone, as a binary file does). A chunk with a row that cannot be read is read again
    through `_records` itself, which says which rows those are.
    """
    with open(purchase_import.file_path, "rb") as handle:
        handle.seek(chunk.byte_start)
        data = handle.read(chunk.byte_end - chunk.byte_start)
    problems: dict[int, str] = {}
    try:
        # The usual case, at the speed of one decode and csv.reader.
        rows = [fields for fields in csv.reader(io.StringIO(data.decode("utf-8"))) if fields]
    except (UnicodeDecodeError, csv.Error):
        # Some row cannot be read: the chunk again, as the scan read it, to know which.
        rows = []
        for _end, fields, problem in _records(io.BytesIO(data), chunk.byte_start):
            if fields or problem:
                if problem:
                    problems[len(rows)] = problem
                rows.append(fields)
    if b"\x00" in data:  # PostgreSQL takes no NUL in text: refused here, row by row
        used = [i for i, column in enumerate(purchase_import.columns) if column in USED_COLUMNS]
        for position, fields in enumerate(rows):
            if position not in problems and any(
                "\x00" in fields[i] for i in used if i < len(fields)
            ):
                problems[position] = NUL_TEXT
    if len(rows) != chunk.row_count:
        raise RuntimeError(
            f"import #{purchase_import.pk}: the file changed since it was scanned "
            f"(chunk at row {chunk.start_row}: {len(rows)} rows, {chunk.row_count} expected)"
        )
    return rows, problems


def _purchase(columns: list[str], row: list[str]) -> dict[str, Any]:
    """A CSV row as the dictionary `purchases_record_batch` takes (ValueError: unusable)."""
    if len(row) != len(columns):
        raise ValueError(f"The row has {len(row)} fields; the header has {len(columns)}")
    cells = dict(zip(columns, map(str.strip, row), strict=True))
    purchase: dict[str, Any] = {
        "idempotency_key": cells["idempotency_key"],
        "member_number": cells["member_number"] or None,
        "amount": cells["amount"],
        "currency": cells["currency"],
        "reference": cells["reference"],
    }
    if cells.get("occurred_at"):
        purchase["occurred_at"] = cells["occurred_at"]
    if cells.get("store_code"):
        purchase["store_code"] = cells["store_code"]
    if cells.get("line_items"):
        try:
            purchase["line_items"] = json.loads(cells["line_items"])
        except RecursionError as exc:
            raise ValueError("lineItems: nested too deeply") from exc
        except ValueError as exc:  # not JSON; or a number too long to convert
            raise ValueError("lineItems: not valid JSON") from exc
    return purchase


def _key_shown(text: str) -> str:
    """A cell of a row that is not UTF-8, writable to the result: its bytes as escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# --------------------------------------------------------------------------- the import


def purchase_import_result_check(*, path: str | Path, result_path: str | Path) -> Path:
    """The result file a caller named, resolved, once it is known to be writable and not the
    file being imported (ImportFileError, with one line saying what is wrong, otherwise).

    Checked before the import is recorded: a result that cannot be written would fail the
    import only after its rows were recorded, and one that is the file would overwrite it.
    """
    result = Path(result_path).resolve()
    source = Path(path).resolve()
    if result == source or (result.exists() and source.exists() and result.samefile(source)):
        raise ImportFileError(f"the result file {result} is the file being imported")
    if result.is_dir():
        raise ImportFileError(f"the result file {result} is a folder")
    folder = result.parent
    if not folder.exists():
        raise ImportFileError(f"the result's folder {folder} does not exist")
    if not folder.is_dir():
        raise ImportFileError(f"the result's folder {folder} is not a folder")
    # Tried rather than asked (os.access): the result and its parts are written there.
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ImportFileError(
            f"the result's folder {folder} is not writable: {exc.strerror or exc}"
        ) from exc
    return result


def purchase_import_create(
    *,
    partner: Partner,
    path: str | Path,
    name: str | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    result_path: str | Path | None = None,
    scan: FileScan | None = None,
) -> PurchaseImport:
    """Record an import of the file and its chunks (ImportFileError: the file is unusable, or
    `result_path` is the file or cannot be written)."""
    path = Path(path).resolve()
    if result_path:
        result_path = purchase_import_result_check(path=path, result_path=result_path)
    scan = scan or purchase_file_scan(path=path, chunk_size=chunk_size)
    with transaction.atomic():
        purchase_import = PurchaseImport.objects.create(
            partner=partner,
            file_path=str(path),
            file_name=name or path.name,
            columns=scan.columns,
            chunk_size=chunk_size,
            total_rows=scan.total_rows,
        )
        # Unique names: several databases (tests, benchmarks) may share the folder.
        unique = f"import-{purchase_import.pk}-{uuid.uuid4().hex[:12]}-result.csv"
        purchase_import.result_path = str(result_path if result_path else import_dir() / unique)
        purchase_import.save(update_fields=["result_path"])
        PurchaseImportChunk.objects.bulk_create(
            [
                PurchaseImportChunk(
                    purchase_import=purchase_import,
                    start_row=start_row,
                    row_count=row_count,
                    byte_start=byte_start,
                    byte_end=byte_end,
                )
                for start_row, row_count, byte_start, byte_end in scan.chunks
            ],
            batch_size=1000,
        )
    if not scan.chunks:
        _finish(purchase_import)
        purchase_import.refresh_from_db()
    return purchase_import


def purchase_import_enqueue(*, purchase_import: PurchaseImport) -> int:
    """Hand every unfinished chunk to the workers (after the commit). Returns how many.

    The chunk jobs are recorded in the outbox in the same transaction as the import's move
    to "running" (issue 9): a broker outage or a crash after the commit loses none of them
    (a chunk run twice is counted once)."""
    from coalition.outbox import celery_tasks_enqueue

    with transaction.atomic():
        PurchaseImport.objects.filter(
            pk=purchase_import.pk, status=PurchaseImport.Status.PENDING
        ).update(status=PurchaseImport.Status.RUNNING)
        chunks = list(
            purchase_import.chunks.filter(finished_at__isnull=True)
            .order_by("start_row")
            .values_list("start_row", "row_count")
        )
        celery_tasks_enqueue(
            "partners.tasks.import_purchases_chunk",
            [(purchase_import.pk, start_row, row_count) for start_row, row_count in chunks],
        )
    return len(chunks)


@dataclass
class ChunkResult:
    accepted: int
    rejected: int
    counted: bool  # False: the chunk had been recorded before


def _parts_dir(purchase_import: PurchaseImport) -> Path:
    """The chunks' results until the file is complete: next to the result file."""
    result = Path(purchase_import.result_path)
    return result.with_name(f".{result.name}.parts")


def _part_path(purchase_import: PurchaseImport, start_row: int) -> Path:
    return _parts_dir(purchase_import) / f"{start_row:012d}.csv"


def _write_atomically(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as out:
            write(out)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; results are for reading
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _result_row(row_number: int, key: str, outcome: PurchaseOutcome) -> list[Any]:
    field_name = outcome.field or ""
    if field_name.startswith("purchases."):
        # The row number says which purchase: keep the field within it.
        field_name = ".".join(field_name.split(".")[2:])
    return [
        row_number,
        key,
        outcome.status,
        "yes" if outcome.replayed else "no",
        outcome.transaction_id or "",
        outcome.points_awarded if outcome.accepted else "",
        outcome.code or "",
        field_name,
        outcome.message,
    ]


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a chunk is recorded (then as it was before).

    A chunk keeps tens of thousands of objects alive until it is written (its purchases,
    their outcomes): allocating them set off the collector's full passes over the whole
    process every other chunk or so, a sizeable share of a chunk's Python time, for
    garbage that reference counting frees anyway when the chunk ends. (Process-wide, as
    the collector is: a worker records one chunk at a time.)
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def import_chunk_process(*, import_id: int, start_row: int, count: int) -> ChunkResult:
    """Record one chunk of an import and count it (once). Safe to run again.

    A chunk that fails with anything but TRANSIENT_ERRORS (which its task retries) marks the
    import failed, saying why (`purchase_import_fail`), and the error goes on to the caller.
    Rows recorded before stay recorded: the chunk run again, or the file sent again,
    replays them.
    """
    with _collector_paused():
        try:
            return _chunk_process(import_id=import_id, start_row=start_row, count=count)
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:  # re-raised: only the import's state is added
            purchase_import_fail(
                import_id=import_id, reason=chunk_failure_reason(start_row, count, exc)
            )
            raise


def chunk_failure_reason(start_row: int, count: int, exc: BaseException) -> str:
    """One line saying which rows failed and why."""
    text = " ".join(str(exc).split())
    reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"rows {start_row + 1}-{start_row + count}: {reason}"[:MAX_REASON]


def purchase_import_fail(*, import_id: int, reason: str) -> bool:
    """Mark an unfinished import failed, and say why: in the audit trail (what the admin
    shows) and the log. False if it had completed or failed already.

    Nothing is undone: the rows recorded stay recorded, and a later run of the unfinished
    chunks can still complete the import."""
    with transaction.atomic():
        current = PurchaseImport.objects.select_for_update().filter(pk=import_id).first()
        if current is None or current.status in (
            PurchaseImport.Status.COMPLETED,
            PurchaseImport.Status.FAILED,
        ):
            return False
        before = current.status
        current.status = PurchaseImport.Status.FAILED
        current.finished_at = timezone.now()
        current.save(update_fields=["status", "finished_at"])
        audit_record(
            actor=None,
            action=FAILED_ACTION,
            object_type=object_type_of(PurchaseImport),
            object_id=current.pk,
            before={"status": before},
            after={"status": current.status, "reason": reason},
        )
    logger.error("purchase import #%s failed: %s", import_id, reason)
    return True


def purchase_import_failure(*, purchase_import: PurchaseImport) -> str:
    """Why the import failed ("" if it has not)."""
    if purchase_import.status != PurchaseImport.Status.FAILED:
        return ""
    event = (
        AuditEvent.objects.filter(
            action=FAILED_ACTION,
            object_type=object_type_of(PurchaseImport),
            object_id=str(purchase_import.pk),
        )
        .order_by("-created_at", "-id")
        .first()
    )
    return (event.after or {}).get("reason", "") if event else ""


def _chunk_process(*, import_id: int, start_row: int, count: int) -> ChunkResult:
    purchase_import = PurchaseImport.objects.select_related("partner").get(pk=import_id)
    chunk = PurchaseImportChunk.objects.get(purchase_import=purchase_import, start_row=start_row)
    if chunk.row_count != count:
        raise ValueError(f"chunk at row {start_row} has {chunk.row_count} rows, not {count}")
    part = _part_path(purchase_import, start_row)
    if chunk.finished_at is not None and (
        part.exists() or purchase_import.status == PurchaseImport.Status.COMPLETED
    ):
        if purchase_import.status != PurchaseImport.Status.COMPLETED:
            # The run that counted it stopped before the import's progress (a crash): go on.
            _progress_update(purchase_import)
        return ChunkResult(chunk.accepted, chunk.rejected, counted=False)

    rows, problems = _chunk_rows(purchase_import, chunk)
    purchases: list[dict] = []
    positions: list[int] = []  # the purchase of each row, or -1: refused before recording
    unusable = dict(problems)  # why, for those
    for position, row in enumerate(rows):
        if problems and position in problems:
            positions.append(-1)
            continue
        try:
            purchases.append(_purchase(purchase_import.columns, row))
            positions.append(len(purchases) - 1)
        except ValueError as exc:
            positions.append(-1)
            unusable[position] = str(exc)
    outcomes = purchases_record_batch(
        partner=purchase_import.partner, purchases=purchases, busy_wallets_last=True
    )

    lines: list[list[Any]] = []
    accepted = rejected = 0
    key_column = purchase_import.columns.index("idempotency_key")
    for position, row in enumerate(rows):
        row_number = start_row + position + 1
        if positions[position] < 0:
            rejected += 1
            key = row[key_column] if key_column < len(row) else ""
            if problems.get(position) == NOT_UTF8:
                key = _key_shown(key)
            message = unusable[position]
            error_field = "lineItems" if message.startswith("lineItems") else ""
            lines.append(
                [row_number, key.strip(), "rejected", "no", "", "", "INVALID", error_field, message]
            )
            continue
        outcome = outcomes[positions[position]]
        if outcome.accepted:
            accepted += 1
        else:
            rejected += 1
        lines.append(
            _result_row(row_number, purchases[positions[position]]["idempotency_key"], outcome)
        )
    _write_atomically(part, lambda out: csv.writer(out).writerows(lines))

    counted = bool(
        PurchaseImportChunk.objects.filter(pk=chunk.pk, finished_at__isnull=True).update(
            accepted=accepted, rejected=rejected, finished_at=timezone.now()
        )
    )
    _progress_update(purchase_import)
    return ChunkResult(accepted, rejected, counted)


def _progress_update(purchase_import: PurchaseImport) -> None:
    """The import's counters from its finished chunks; the chunk that completes the file
    assembles the result.

    Counters only grow: GREATEST keeps a slower, older count from overwriting a newer one
    when two workers finish chunks at the same moment.
    """
    done = purchase_import.chunks.filter(finished_at__isnull=False).aggregate(
        processed=Coalesce(Sum("row_count"), 0),
        accepted=Coalesce(Sum("accepted"), 0),
        rejected=Coalesce(Sum("rejected"), 0),
    )
    PurchaseImport.objects.filter(pk=purchase_import.pk).update(
        processed_rows=Greatest("processed_rows", done["processed"]),
        accepted=Greatest("accepted", done["accepted"]),
        rejected=Greatest("rejected", done["rejected"]),
    )
    PurchaseImport.objects.filter(
        pk=purchase_import.pk, status=PurchaseImport.Status.PENDING
    ).update(status=PurchaseImport.Status.RUNNING)
    if done["processed"] >= purchase_import.total_rows:
        _finish(purchase_import)


def _finish(purchase_import: PurchaseImport) -> None:
    """Assemble the result CSV from the chunks' parts and mark the import completed (once:
    under the import's row lock, a second finisher finds it completed)."""
    with transaction.atomic():
        current = PurchaseImport.objects.select_for_update().get(pk=purchase_import.pk)
        if current.status == PurchaseImport.Status.COMPLETED:
            return
        starts = list(current.chunks.order_by("start_row").values_list("start_row", flat=True))

        def write(out) -> None:
            csv.writer(out).writerow(RESULT_COLUMNS)
            out.flush()
            for start_row in starts:
                part = _part_path(current, start_row)
                with part.open(encoding="utf-8", newline="") as rows:
                    shutil.copyfileobj(rows, out)

        _write_atomically(Path(current.result_path), write)
        current.status = PurchaseImport.Status.COMPLETED
        current.finished_at = timezone.now()
        current.save(update_fields=["status", "finished_at"])
    shutil.rmtree(_parts_dir(purchase_import), ignore_errors=True)
