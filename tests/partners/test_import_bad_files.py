"""Bad purchase files (`manage.py import_purchases`, the admin upload, the chunk task): every
bad row gets its own rejection and the good rows beside it are recorded; a file that cannot
be read at all is refused with one line before anything is recorded; a chunk that dies
marks its import failed, saying why, and never leaves it running for ever."""

import csv
import io
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import OperationalError
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from coalition.models import LedgerTransaction
from partners import imports, tasks
from partners.imports import purchase_file_scan, purchase_import_failure
from partners.models import PurchaseImport
from tests import factories
from tests.partners.test_batch_import import HEADER, chunks_sent, import_folder, read_result

# Fixtures: import_folder (autouse: each test's uploads and results in its own folder) and
# chunks_sent
__all__ = ["chunks_sent", "import_folder"]

COLUMNS = ",".join(HEADER)


@pytest.fixture
def member(programme):
    return factories.member()


def row(key, member, amount="10.00", reference=None, line_items="") -> str:
    """One CSV line of a purchase, written by hand (the point is what a writer would not do)."""
    return f"{key},{member.member_number},{amount},USD,{reference or 'r-' + key},,,{line_items}"


def write_file(path, lines: list[str], *, newline="\n", encoding="utf-8"):
    path.write_bytes(newline.join([COLUMNS, *lines, ""]).encode(encoding))
    return path


def shell(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`manage.py import_purchases ARGS` as from the shell: (exit status, stdout, stderr)."""
    from django.db import connections

    from partners.management.commands.import_purchases import Command

    # run_from_argv closes the connections when done: keep the test's own open
    monkeypatch.setattr(connections, "close_all", lambda: None)
    try:
        Command().run_from_argv(["manage.py", "import_purchases", *map(str, args)])
        status = 0
    except SystemExit as exited:
        status = exited.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def outcomes(result) -> list[tuple]:
    return [
        (r["row"], r["idempotency_key"], r["status"], r["error_code"], r["error_field"])
        for r in result
    ]


# --------------------------------------------------------------------------- rows


def test_an_unquoted_inch_mark_is_text_not_a_quote(partner, member, tmp_path, monkeypatch,
                                                   capsys):  # fmt: skip
    # Given a file where one reference is `12" pizza`, unquoted, and another field is quoted
    # over two lines
    path = write_file(
        tmp_path / "eod.csv",
        [
            row("p-1", member, reference='12" pizza'),
            row("p-2", member, reference='"two\nlines"'),
            row("p-3", member, reference='14" "deep dish"'),
            row("p-4", member),
        ],
    )

    # When it is imported, in chunks of 1 and of 1000
    status, out, err = shell(monkeypatch, capsys, partner.code, path, "--chunk", "1", "--sync",
                             "--result", tmp_path / "result.csv")  # fmt: skip

    # Then every row is accepted, with the references as the file has them
    assert (status, err) == (0, "")
    assert "4/4 rows, 4 accepted, 0 rejected" in out
    result = read_result(tmp_path / "result.csv")
    assert [r["status"] for r in result] == ["accepted"] * 4
    references = LedgerTransaction.objects.filter(idempotency_key__startswith="p-")
    assert sorted(references.values_list("reference", flat=True)) == sorted(
        ['12" pizza', "two\nlines", '14" "deep dish"', "r-p-4"]
    )
    assert PurchaseImport.objects.get().status == "completed"
    call_command("import_purchases", partner.code, str(path), "--sync", stdout=io.StringIO())
    again = PurchaseImport.objects.order_by("-id").first()
    assert (again.status, again.accepted, again.total_rows) == ("completed", 4, 4)


@pytest.mark.parametrize(
    ("bad_line", "reason", "error_field", "key"),
    [
        pytest.param(
            "k-bad,{number},10.00,USD," + "x" * 131_073 + ",,,",
            "A field is longer than 131,072 characters",
            "",
            "",  # the row could not be split into fields
            id="field-too-long",
        ),
        pytest.param(
            '{key},{number},10.00,USD,r,,,"' + "[" * 5000 + '"',
            "lineItems: nested too deeply",
            "lineItems",
            "k-bad",
            id="line-items-too-deep",
        ),
        pytest.param(
            "k-bad,{number},10.00,USD,half\ra line,,,",
            "A line break (CR) inside an unquoted field: quote the field",
            "",
            "",
            id="stray-cr",
        ),
        pytest.param(
            "k-bad,{number}\x00,10.00,USD,r,,,",
            "The row contains NUL characters",
            "",
            "k-bad",
            id="nul",  # PostgreSQL refuses the whole query
        ),
    ],
)
def test_a_row_that_cannot_be_read_is_rejected_alone(partner, member, tmp_path, bad_line,
                                                     reason, error_field, key):  # fmt: skip
    # Given a file whose second row cannot be used, between two good rows of the same chunk
    bad = bad_line.format(key="k-bad", number=member.member_number)
    path = write_file(tmp_path / "eod.csv", [row("k-1", member), bad, row("k-3", member)])
    result_path = tmp_path / "result.csv"

    # When it is imported
    out = io.StringIO()
    call_command("import_purchases", partner.code, str(path), "--result", str(result_path),
                 "--sync", stdout=out)  # fmt: skip

    # Then that row is rejected, saying why, and the good rows beside it are recorded
    result = read_result(result_path)
    assert outcomes(result) == [
        ("1", "k-1", "accepted", "", ""),
        ("2", key, "rejected", "INVALID", error_field),
        ("3", "k-3", "accepted", "", ""),
    ]
    assert result[1]["error_message"] == reason
    imported = PurchaseImport.objects.get()
    assert (imported.status, imported.accepted, imported.rejected) == ("completed", 2, 1)
    assert factories.wallet(member).balance == 20
    assert not LedgerTransaction.objects.filter(idempotency_key="k-bad").exists()


def test_a_row_that_is_not_utf8_is_rejected_not_stored_garbled(partner, member, tmp_path):
    # Given a UTF-8 file with one row saved as Latin-1 (`Café réf`), and a UTF-8 `Café`
    lines = [
        row("k-1", member, reference="Café").encode(),
        row("k-2", member, reference="Café réf").encode("latin-1"),
        row("k-3", member).encode(),
    ]
    path = tmp_path / "eod.csv"
    path.write_bytes(b"\n".join([COLUMNS.encode(), *lines, b""]))
    result_path = tmp_path / "result.csv"

    # When it is imported
    call_command("import_purchases", partner.code, str(path), "--result", str(result_path),
                 "--sync", stdout=io.StringIO())  # fmt: skip

    # Then the Latin-1 row is rejected, saying so, and nothing garbled was stored
    result = read_result(result_path)
    assert outcomes(result) == [
        ("1", "k-1", "accepted", "", ""),
        ("2", "k-2", "rejected", "INVALID", ""),
        ("3", "k-3", "accepted", "", ""),
    ]
    assert "not UTF-8" in result[1]["error_message"]
    assert not LedgerTransaction.objects.filter(reference__contains="\ufffd").exists()
    assert not LedgerTransaction.objects.filter(idempotency_key="k-2").exists()
    assert LedgerTransaction.objects.get(idempotency_key="k-1").reference == "Café"
    imported = PurchaseImport.objects.get()
    assert (imported.status, imported.accepted, imported.rejected) == ("completed", 2, 1)


def test_the_key_of_a_row_that_is_not_utf8_is_shown_by_its_bytes(partner, member, tmp_path):
    path = tmp_path / "eod.csv"
    path.write_bytes(f"{COLUMNS}\nkey-é,{member.member_number},1,USD,r,,,\n".encode("latin-1"))
    call_command("import_purchases", partner.code, str(path), "--result",
                 str(tmp_path / "result.csv"), "--sync", stdout=io.StringIO())  # fmt: skip
    (rejected,) = read_result(tmp_path / "result.csv")
    assert (rejected["idempotency_key"], rejected["status"]) == ("key-\\xe9", "rejected")


# --------------------------------------------------------------------------- whole files


def test_a_file_with_cr_only_line_breaks_is_refused_with_one_line(partner, member, tmp_path,
                                                                 monkeypatch, capsys):  # fmt: skip
    # Given a file saved with CR alone at the end of its lines (old Mac style)
    path = write_file(tmp_path / "eod.csv", [row("k-1", member), row("k-2", member)], newline="\r")
    before = factories.ledger_state()

    # When it is imported
    status, out, err = shell(monkeypatch, capsys, partner.code, path, "--sync")

    # Then it is refused with one line saying why, and nothing was recorded
    assert status == 1
    assert len(err.strip().splitlines()) == 1
    assert "eod.csv: the lines end with CR alone" in err
    assert not PurchaseImport.objects.exists()
    assert factories.ledger_state() == before


def test_a_header_that_is_not_csv_is_refused(partner, tmp_path):
    path = tmp_path / "eod.csv"
    path.write_text(f"idempotency_key,member_number,amount,currency,reference,{'x' * 200_000}\n")
    with pytest.raises(CommandError, match="eod.csv: the header cannot be read: A field is lo"):
        call_command("import_purchases", partner.code, str(path), "--sync")
    assert not PurchaseImport.objects.exists()


def test_the_admin_refuses_a_cr_only_file_with_a_message(partner, member, client, import_folder,
                                                        django_user_model):  # fmt: skip
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.urls import reverse

    operator = django_user_model.objects.create_superuser(username="ops", password="x-Str0ng-p")
    client.force_login(operator)
    content = "\r".join([COLUMNS, row("k-1", member), ""]).encode()
    upload = SimpleUploadedFile("eod.csv", content, content_type="text/csv")

    response = client.post(
        reverse("admin:partners_purchaseimport_add"),
        {"partner": partner.pk, "chunk_size": 10, "upload": upload},
    )

    assert response.status_code == 200
    assert b"eod.csv: the lines end with CR alone" in response.content
    assert not PurchaseImport.objects.exists()
    assert list((import_folder / "uploads").iterdir()) == []


# --------------------------------------------------------------------------- the result file


def test_a_result_file_that_is_the_input_is_refused(partner, member, tmp_path, monkeypatch,
                                                    capsys):  # fmt: skip
    # Given the partner's file, and a --result naming it (another way)
    path = write_file(tmp_path / "eod.csv", [row("k-1", member)])
    content = path.read_bytes()
    before = factories.ledger_state()

    # When it is imported with the file as its own result
    status, _, err = shell(monkeypatch, capsys, partner.code, path, "--sync", "--result",
                           tmp_path / "sub" / ".." / "eod.csv")  # fmt: skip

    # Then it is refused with one line, the file is untouched and nothing was recorded
    assert status == 1
    assert len(err.strip().splitlines()) == 1 and "is the file being imported" in err
    assert path.read_bytes() == content
    assert not PurchaseImport.objects.exists()
    assert factories.ledger_state() == before


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ("{tmp}/no-such-folder/result.csv", "does not exist"),
        ("{tmp}/eod.csv/result.csv", "eod.csv is not a folder"),
        # Not writable, even by root (the tests may run as root: no chmod then)
        ("/proc/result.csv", "the result's folder /proc is not writable"),
    ],
    ids=["missing-folder", "under-a-file", "unwritable-folder"],
)
def test_a_result_file_that_cannot_be_written_is_refused_before_recording(
    partner, member, tmp_path, monkeypatch, capsys, result, message
):
    # Given a file, and a --result that cannot be written
    path = write_file(tmp_path / "eod.csv", [row("k-1", member)])
    before = factories.ledger_state()

    # When it is imported
    status, _, err = shell(
        monkeypatch, capsys, partner.code, path, "--sync", "--result", result.format(tmp=tmp_path)
    )

    # Then it is refused with one line, before anything was recorded
    assert status == 1
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not PurchaseImport.objects.exists()
    assert factories.ledger_state() == before


def test_a_result_file_that_is_a_folder_is_refused(partner, member, tmp_path):
    path = write_file(tmp_path / "eod.csv", [row("k-1", member)])
    with pytest.raises(CommandError, match="is a folder"):
        call_command("import_purchases", partner.code, str(path), "--result", str(tmp_path))
    assert not PurchaseImport.objects.exists()


# --------------------------------------------------------------------------- failed chunks


def test_a_chunk_that_dies_fails_the_import_and_keeps_what_was_recorded(
    partner, member, tmp_path, monkeypatch, capsys, client, django_user_model
):
    from django.urls import reverse

    # Given a file of 4 rows in chunks of 2, and a fault that kills the second chunk
    path = write_file(tmp_path / "eod.csv", [row(f"k-{n}", member) for n in range(1, 5)])
    record = imports.purchases_record_batch
    calls = []

    def second_chunk_dies(**kwargs):
        calls.append(kwargs)
        if len(calls) == 2:
            raise KeyError("a bug")
        return record(**kwargs)

    monkeypatch.setattr(imports, "purchases_record_batch", second_chunk_dies)

    # When it is imported here
    status, _, err = shell(monkeypatch, capsys, partner.code, path, "--chunk", "2", "--sync",
                           "--result", tmp_path / "result.csv")  # fmt: skip

    # Then the command fails with one line, and the import is failed, saying why
    imported = PurchaseImport.objects.get()
    assert status == 1
    assert err.strip() == (
        f"CommandError: import #{imported.pk} failed: rows 3-4: KeyError: 'a bug' "
        "(the 2 rows before it were recorded)"
    )
    assert (imported.status, imported.processed_rows, imported.accepted) == ("failed", 2, 2)
    assert imported.finished_at is not None
    assert purchase_import_failure(purchase_import=imported) == "rows 3-4: KeyError: 'a bug'"
    # And the first chunk's rows stay recorded
    assert factories.wallet(member).balance == 20
    # And the admin shows why
    operator = django_user_model.objects.create_superuser(username="ops", password="x-Str0ng-p")
    client.force_login(operator)
    page = client.get(reverse("admin:partners_purchaseimport_change", args=[imported.pk]))
    assert b"rows 3-4: KeyError: &#x27;a bug&#x27;" in page.content

    # When the file is sent again, the fault gone
    monkeypatch.setattr(imports, "purchases_record_batch", record)
    status, _, _ = shell(monkeypatch, capsys, partner.code, path, "--chunk", "2", "--sync",
                         "--result", tmp_path / "again.csv")  # fmt: skip

    # Then it completes: the first rows replayed, the others recorded, each once
    assert status == 0
    again = read_result(tmp_path / "again.csv")
    assert [(r["status"], r["replayed"]) for r in again] == [
        ("accepted", "yes"),
        ("accepted", "yes"),
        ("accepted", "no"),
        ("accepted", "no"),
    ]
    assert factories.wallet(member).balance == 40


@pytest.fixture
def sent_to_workers(partner, member, tmp_path, chunks_sent,
                    django_capture_on_commit_callbacks):  # fmt: skip
    """A file of 4 rows imported without --sync in chunks of 2: (path, import, chunk args)."""
    from coalition.outbox import outbox_relay

    path = write_file(tmp_path / "eod.csv", [row(f"k-{n}", member) for n in range(1, 5)])
    with django_capture_on_commit_callbacks(execute=True):
        call_command("import_purchases", partner.code, str(path), "--chunk", "2",
                     stdout=io.StringIO())  # fmt: skip
    outbox_relay()
    return path, PurchaseImport.objects.get(), chunks_sent


def test_a_file_changed_under_the_workers_fails_the_import(sent_to_workers, member):
    # Given an import sent to the workers, its first chunk recorded
    path, imported, sent = sent_to_workers
    tasks.import_purchases_chunk(*sent[0])

    # When the partner's file is replaced before the second chunk is recorded
    write_file(path, [row("k-1", member), '"k-2,unclosed'])
    with pytest.raises(RuntimeError, match="changed since it was scanned"):
        tasks.import_purchases_chunk(*sent[1])

    # Then the import is failed, saying why, and the first chunk stays recorded
    imported.refresh_from_db()
    assert (imported.status, imported.processed_rows) == ("failed", 2)
    assert "the file changed since it was scanned" in purchase_import_failure(
        purchase_import=imported
    )
    assert factories.wallet(member).balance == 20


def test_a_transient_error_fails_the_import_only_when_the_retries_are_spent(
    sent_to_workers, monkeypatch
):
    # Given an import sent to the workers, and a database that is down
    _, imported, sent = sent_to_workers

    def database_down(**_kwargs):
        raise OperationalError("the database is down")

    monkeypatch.setattr(imports, "_chunk_process", database_down)

    # When a chunk's task meets it with retries left, the import is still running
    with pytest.raises(OperationalError):
        tasks.import_purchases_chunk(*sent[0])
    imported.refresh_from_db()
    assert imported.status == "running"

    # When its last retry meets it, the import is failed, saying why
    with pytest.raises(OperationalError):
        tasks.import_purchases_chunk.apply(args=sent[0], retries=5, throw=True)
    imported.refresh_from_db()
    assert imported.status == "failed"
    assert purchase_import_failure(purchase_import=imported) == (
        "rows 1-2: OperationalError: the database is down"
    )
    assert tasks.IMPORT_TRANSIENT_ERRORS == imports.TRANSIENT_ERRORS


# --------------------------------------------------------------------------- scan and read


def _rows_read(path, scan) -> list[list[str]]:
    """Every chunk of the scan, read as a worker reads it."""
    purchase_import = SimpleNamespace(pk=1, file_path=str(path), columns=list(HEADER))
    rows = []
    for start_row, row_count, byte_start, byte_end in scan.chunks:
        chunk = SimpleNamespace(
            start_row=start_row, row_count=row_count, byte_start=byte_start, byte_end=byte_end
        )
        fields, _problems = imports._chunk_rows(purchase_import, chunk)
        rows.extend(fields)
    return rows


@examples(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.text(alphabet='ab,"\n\r\x00é', max_size=60),
    chunk_size=st.integers(min_value=1, max_value=3),
    bom=st.booleans(),
)
def test_the_scan_and_the_workers_agree_on_every_row(tmp_path, body, chunk_size, bom):
    # Given any file with the required header (quotes, breaks and bytes anywhere after it)
    path = tmp_path / "any.csv"
    data = (",".join(HEADER) + "\n" + body).encode()
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data.replace(b"\xc3\xa9", b"\xe9", 1))

    # When it is scanned and its chunks read
    scan = purchase_file_scan(path=path, chunk_size=chunk_size)
    rows = _rows_read(path, scan)

    # Then the workers find exactly the rows the scan counted (no "file changed" error)
    assert len(rows) == scan.total_rows
    assert scan.columns == list(HEADER)


def test_the_scan_reads_the_header_as_csv_does(tmp_path):
    # A byte-order mark before a quoted header; CRLF line breaks; blank lines between rows
    path = tmp_path / "eod.csv"
    path.write_bytes(
        b'\xef\xbb\xbf"idempotency_key","member_number",amount,currency,reference\r\n'
        b"\r\nk-1,1,1,USD,r\r\n\r\n\r\nk-2,1,1,USD,r\r\n"
    )
    scan = purchase_file_scan(path=path, chunk_size=1)
    assert scan.columns == list(HEADER[:5])
    assert scan.total_rows == 2
    assert [row[0] for row in _rows_read(path, scan)] == ["k-1", "k-2"]
    with open(path, newline="", encoding="utf-8-sig") as handle:
        assert [r for r in csv.reader(handle) if r][1:] == _rows_read(path, scan)
