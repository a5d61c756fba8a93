"""Purchase-file throughput: `import_purchases` in-process against a raw-SQL floor, on
PostgreSQL, in the same run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/coalition_bench_batch \\
        .venv/bin/python -m bench.batch [--rows 100000] [--chunk 1000] [--members 20000]
                                        [--profile N] [--no-check]

It prints numbers and asserts nothing about them. It needs a PostgreSQL database of its own
whose name contains "bench" (default coalition_bench_batch): created if missing, migrated, so
the ledger triggers fire for every row. SQLite is refused. Settings are config.settings.dev
with DEBUG off.

Preparation (not timed): a partner (earn rate 1, no promotions), M members with wallets, and
a CSV file of R purchases at random members (amounts 1.00–200.00 USD, a reference, a key).

Timed (a) and (c) alternating chunk by chunk, so that both see the same load, then (b):
  (a) the file through `purchase_import_create` + `import_chunk_process` for every chunk, in
      this process: exactly what `manage.py import_purchases PARTNER FILE --sync` does
      (file scan, CSV parsing, validation, the rule engine, `points_earn_batch`, result CSV);
  (b) the same file sent again: every row a replay;
  (c) the raw SQL floor: the same purchases (fresh keys) read from the same CSV with
      csv.reader, one psycopg2 transaction per chunk: lock the chunk's wallets FOR UPDATE in
      member-id order, one multi-row INSERT each for the transactions (RETURNING id, with
      the same metadata the service writes), their entries and lots, one UPDATE of the
      wallets' last activity, COMMIT. No validation, no idempotency look-up, no tiers.

Then purchases/s for each, the ratio (a)/(c), the goal (a) >= 10,000 purchases/s; with
--processes N, (d): another file of the same size whose chunks N forked processes record at
once (as N Celery workers would; members overlap, wallets are locked in member-id order);
with --celery N, (e): another file of the same size sent as an operator sends it,
`manage.py import_purchases PARTNER FILE` without --sync, to a Celery worker of N processes
(`celery -A config worker -c N`, started by the bench on Redis database 15 and ready before
the clock starts), timed from the command's start until the import is recorded as completed
in the database (file scan, the outbox relay, the broker, every chunk, the result file);
and (f): the raw SQL floor of (c) for another file of that size in N forked processes at
once, each on its own connection and with its own members (member id modulo N, so that none
waits for another's locks: the best case), the floor for (e);
with --profile N a cProfile of an import of N rows (top functions by own and cumulative time).
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import io
import os
import pstats
import random
import secrets
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from bench import pg
from bench.common import members_bulk_create

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/coalition_bench_batch"
GOAL = 10_000
PARTNER_CODE = "BENCH-FILE"


def _db_config(url: str) -> dict:
    return pg.db_config(url, bench="bench.batch", default_url=DEFAULT_URL)


_connect = pg.connect
ensure_database = pg.ensure_database


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.pop("CELERY_BROKER_URL", None)  # tasks in-process
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    os.environ.setdefault("DEBUG", "false")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


# --------------------------------------------------------------------------- fixture


def prepare(members: int, log) -> tuple[object, list[tuple[int, str]]]:
    """The partner and `members` new members with wallets: [(member id, number)]."""

    from coalition.services import programme_get
    from partners.models import Partner

    programme_get()
    partner, _ = Partner.objects.get_or_create(
        code=PARTNER_CODE, defaults={"name": "Bench file partner", "currency": "USD"}
    )
    started = time.perf_counter()
    created = members_bulk_create(members, label="batch", digit="8")
    log(f"  {members} members and wallets in {time.perf_counter() - started:.2f} s")
    # Statistics as a database in service has them (autovacuum). On a fresh, fast-growing
    # table stale statistics make the planner scan every key of the caller (measured 25×
    # slower per look-up) until autovacuum analyzes it.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return partner, [(m.pk, m.member_number) for m in created]


def write_file(path: Path, rows: int, members: list[tuple[int, str]], key_prefix: str) -> None:
    rng = random.Random(7)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["idempotency_key", "member_number", "amount", "currency", "reference"])
        for n in range(rows):
            _, number = members[rng.randrange(len(members))]
            amount = f"{rng.randint(100, 20000) / 100:.2f}"
            writer.writerow([f"{key_prefix}-{n}", number, amount, "USD", f"receipt-{n}"])


# --------------------------------------------------------------------------- workloads


def run_import(partner, path: Path, chunk: int, between=None) -> tuple[float, object]:
    """What `manage.py import_purchases PARTNER FILE --sync` does, timed. `between(i)` runs
    (untimed) after chunk i: the floor's chunk, so both see the same machine load."""
    from partners.imports import import_chunk_process, purchase_import_create

    started = time.perf_counter()
    imported = purchase_import_create(partner=partner, path=path, chunk_size=chunk)
    elapsed = time.perf_counter() - started
    chunks = imported.chunks.order_by("start_row").values_list("start_row", "row_count")
    for index, (start_row, count) in enumerate(list(chunks)):
        started = time.perf_counter()
        import_chunk_process(import_id=imported.pk, start_row=start_row, count=count)
        elapsed += time.perf_counter() - started
        if between is not None:
            between(index)
    imported.refresh_from_db()
    return elapsed, imported


def _worker(import_id: int, chunks: list[tuple[int, int]]) -> None:
    from partners.imports import import_chunk_process

    for start_row, count in chunks:
        import_chunk_process(import_id=import_id, start_row=start_row, count=count)


def run_parallel(partner, path: Path, chunk: int, processes: int) -> tuple[float, object]:
    """The file's chunks recorded by `processes` forked processes at once."""

    from django.db import connections

    from partners.imports import purchase_import_create

    started = time.perf_counter()
    imported = purchase_import_create(partner=partner, path=path, chunk_size=chunk)
    chunks = list(imported.chunks.order_by("start_row").values_list("start_row", "row_count"))
    connections.close_all()  # each process opens its own
    _forked(_worker, [(imported.pk, chunks[index::processes]) for index in range(processes)])
    elapsed = time.perf_counter() - started
    imported.refresh_from_db()
    return elapsed, imported


def _forked(target, arguments: list[tuple]) -> None:
    """Run `target(*args)` in a forked process for each of `arguments`, all at once; exit if
    one fails."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=target, args=args) for args in arguments]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if any(worker.exitcode for worker in workers):
        sys.exit(f"a forked process of {target.__name__} failed")


CELERY_BROKER = "redis://127.0.0.1:6379/15"


def run_celery(url: str, path: Path, chunk: int, concurrency: int) -> tuple[float, object]:
    """(e) The file through `manage.py import_purchases` and a real Celery worker."""
    import subprocess

    import redis

    from partners.models import PurchaseImport

    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "CELERY_BROKER_URL": CELERY_BROKER,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "DJANGO_SETTINGS_MODULE": "config.settings.dev",
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
    }
    redis.Redis.from_url(CELERY_BROKER).flushdb()  # no task left over from an earlier run
    log_path = path.with_suffix(".worker.log")
    with log_path.open("w") as worker_log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-c", str(concurrency),
             "-l", "info", "-n", f"bench-batch-{os.getpid()}@%h", "--without-gossip",
             "--without-mingle", "--without-heartbeat"],
            cwd=root, env=env, stdout=worker_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while " ready." not in log_path.read_text():
            if worker.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the Celery worker did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        before = PurchaseImport.objects.order_by("-id").values_list("id", flat=True).first()
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "manage.py", "import_purchases", PARTNER_CODE, str(path),
             "--chunk", str(chunk)],
            cwd=root, env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        print(
            f"    (e) the command (start, file scan, chunks to the outbox) returned after "
            f"{time.perf_counter() - started:.2f} s",
            flush=True,
        )
        imported = PurchaseImport.objects.filter(id__gt=before or 0).order_by("id").first()
        finished = {PurchaseImport.Status.COMPLETED, PurchaseImport.Status.FAILED}
        while True:
            imported.refresh_from_db()
            if imported.status in finished:
                break
            if worker.poll() is not None:
                sys.exit(f"the Celery worker died:\n{log_path.read_text()[-2000:]}")
            # Not more often: each look is a query, which takes its share of the two cores.
            time.sleep(0.1)
        return time.perf_counter() - started, imported
    finally:
        worker.terminate()
        worker.wait(timeout=30)


SQL_LOCK = (
    "SELECT member_id, id, balance FROM coalition_account "
    "WHERE member_id = ANY(%s) AND kind = 'member_wallet' ORDER BY member_id FOR UPDATE"
)
SQL_TXNS = (
    "INSERT INTO coalition_transaction (kind, member_id, partner_id, charity_id, member_points, "
    "reference, caller, idempotency_key, request_hash, purchase_amount, purchase_currency, "
    "reversal_of_id, hold_id, created_at, metadata) VALUES %s RETURNING id"
)
TXN_TEMPLATE = "('earn', %s, %s, NULL, %s, %s, %s, %s, %s, %s, 'USD', NULL, NULL, %s, %s)"
SQL_ENTRIES = "INSERT INTO coalition_entry (transaction_id, account_id, points) VALUES %s"
SQL_LOTS = (
    "INSERT INTO coalition_lot (member_id, transaction_id, points, remaining, expires_at, "
    "created_at) VALUES %s"
)
SQL_ACTIVITY = "UPDATE coalition_account SET last_activity_at = %s WHERE id = ANY(%s)"


class Floor:
    """The same purchases as multi-row INSERTs through psycopg2, one transaction per chunk."""

    def __init__(self, config: dict, partner, path: Path, chunk: int, key_prefix: str):
        from coalition.models import Account, Member
        from coalition.services import programme_get, system_account_id

        self.issued = system_account_id(Account.Kind.PARTNER_ISSUED, partner_id=partner.pk)
        self.programme = programme_get()
        self.numbers = dict(Member.objects.values_list("member_number", "id"))
        self.partner_id = partner.pk
        self.caller = f"partner:{partner.pk}"
        self.chunk = chunk
        self.key_prefix = key_prefix
        self.conn = _connect(config)
        started = time.perf_counter()
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            next(reader)
            self.rows = list(reader)
        self.elapsed = time.perf_counter() - started

    def run_chunk(self, index: int) -> None:
        from psycopg2.extras import Json, execute_values

        from coalition.services import lot_expiry

        started = time.perf_counter()
        part = self.rows[index * self.chunk : (index + 1) * self.chunk]
        now = datetime.now(UTC)
        expires_at = lot_expiry(self.programme, now)
        member_ids = [self.numbers[number] for _, number, *_ in part]
        with self.conn.cursor() as cur:
            cur.execute(SQL_LOCK, [sorted(set(member_ids))])
            wallets = {member_id: wallet_id for member_id, wallet_id, _ in cur.fetchall()}
            values = []
            points = []
            for (key, _number, amount, _currency, reference), member_id in zip(
                part, member_ids, strict=True
            ):
                earned = int(Decimal(amount))
                points.append(earned)
                metadata = {
                    "breakdown": [
                        {"kind": "base", "label": f"{amount} × 1.0000", "points": earned,
                         "fundedBy": "partner", "promotionId": None, "multiplier": None}
                    ],
                    "eligibleAmount": amount, "occurredAt": now.isoformat(), "store": None,
                    "lineItems": [],
                }  # fmt: skip
                values.append(
                    (member_id, self.partner_id, earned, reference, self.caller,
                     f"{self.key_prefix}-{key}", "", amount, now, Json(metadata))
                )  # fmt: skip
            ids = execute_values(
                cur, SQL_TXNS, values, template=TXN_TEMPLATE, page_size=self.chunk, fetch=True
            )
            entries = []
            lots = []
            for (txn_id,), member_id, earned in zip(ids, member_ids, points, strict=True):
                entries.append((txn_id, self.issued, -earned))
                entries.append((txn_id, wallets[member_id], earned))
                lots.append((member_id, txn_id, earned, earned, expires_at, now))
            execute_values(cur, SQL_ENTRIES, entries, page_size=2 * self.chunk)
            execute_values(cur, SQL_LOTS, lots, page_size=self.chunk)
            cur.execute(SQL_ACTIVITY, [now, sorted(set(wallets.values()))])
        self.conn.commit()
        self.elapsed += time.perf_counter() - started

    def close(self) -> None:
        self.conn.close()


def run_floor_parallel(
    config: dict, partner, path: Path, chunk: int, key_prefix: str, processes: int
) -> float:
    """(f): the raw-SQL floor of a file shared by `processes` forked processes at once, each
    on its own connection, each taking the rows of its own members (member id modulo
    `processes`), so that none ever waits for another's wallet locks: the best case. Chunks
    of `chunk` rows; wall-clock seconds from the fork to the last commit."""

    from django.db import connections

    floor = Floor(config, partner, path, chunk, key_prefix)  # the file read before the clock
    floor.close()
    connections.close_all()
    shares = [
        [row for row in floor.rows if floor.numbers[row[1]] % processes == index]
        for index in range(processes)
    ]

    def work(rows: list) -> None:
        floor.rows = rows
        floor.conn = _connect(config)
        for index in range((len(rows) + chunk - 1) // chunk):
            floor.run_chunk(index)
        floor.close()

    started = time.perf_counter()
    _forked(work, [(share,) for share in shares])
    return time.perf_counter() - started


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--profile", type=int, default=0, help="cProfile an import of N rows")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="(d): another file of the same size, its chunks shared by N processes (as N "
        "Celery workers would), on overlapping members",
    )
    parser.add_argument(
        "--celery",
        type=int,
        default=0,
        help="(e): another file through manage.py import_purchases and a Celery worker of N "
        "processes (Redis)",
    )
    parser.add_argument("--celery-rows", type=int, default=0, help="rows of (e)'s file (--rows)")
    parser.add_argument("--no-check", action="store_true", help="skip check_ledger at the end")
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, flush=True)

    url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    config = _db_config(url)
    ensure_database(config)
    setup_django(url)
    log(f"bench.batch on {config['NAME']}: {args.rows} purchases in chunks of {args.chunk}")
    partner, members = prepare(args.members, log)
    run = secrets.token_hex(4)
    folder = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    from django.conf import settings

    settings.PURCHASE_IMPORT_DIR = str(folder / "imports")  # results: with the files, then gone
    path = folder / "purchases.csv"
    write_file(path, args.rows, members, f"b{run}")
    log(f"  file of {args.rows} rows: {path.stat().st_size / 1e6:.1f} MB")

    # (a) and (c) alternate chunk by chunk, so that both see the same load on the machine.
    floor = Floor(config, partner, path, args.chunk, f"floor{run}")
    try:
        elapsed_a, imported = run_import(partner, path, args.chunk, between=floor.run_chunk)
    finally:
        floor.close()
    rate_a = args.rows / elapsed_a
    rate_c = args.rows / floor.elapsed
    log(
        f"(a) import_purchases --sync : {elapsed_a:6.2f} s  {rate_a:9,.0f} purchases/s  "
        f"({imported.accepted} accepted, {imported.rejected} rejected)"
    )
    log(f"(c) raw SQL floor           : {floor.elapsed:6.2f} s  {rate_c:9,.0f} purchases/s")
    elapsed_b, again = run_import(partner, path, args.chunk)
    log(
        f"(b) same file again (replay): {elapsed_b:6.2f} s  {args.rows / elapsed_b:9,.0f} "
        f"purchases/s  ({again.accepted} accepted, all replayed)"
    )
    log(
        f"ratio (a)/(c) = {rate_a / rate_c:.2f}; goal (a) >= {GOAL:,} purchases/s: "
        f"{'met' if rate_a >= GOAL else 'NOT met'}"
    )

    if args.processes > 1:
        parallel_path = folder / "parallel.csv"
        write_file(parallel_path, args.rows, members, f"w{run}")
        elapsed_d, done = run_parallel(partner, parallel_path, args.chunk, args.processes)
        log(
            f"(d) {args.processes} processes at once    : {elapsed_d:6.2f} s  "
            f"{args.rows / elapsed_d:9,.0f} purchases/s  ({done.status}, {done.accepted} accepted)"
        )

    if args.celery:
        celery_rows = args.celery_rows or args.rows
        celery_path = folder / "celery.csv"
        write_file(celery_path, celery_rows, members, f"c{run}")
        elapsed_e, done = run_celery(url, celery_path, args.chunk, args.celery)
        log(
            f"(e) Celery, {args.celery} processes    : {elapsed_e:6.2f} s  "
            f"{celery_rows / elapsed_e:9,.0f} purchases/s  ({done.status}, {done.accepted} "
            f"accepted, {done.rejected} rejected; {celery_rows} rows)"
        )

    if args.celery:
        floor_path = folder / "floor-parallel.csv"
        write_file(floor_path, celery_rows, members, f"f{run}")
        elapsed_f = run_floor_parallel(
            config, partner, floor_path, args.chunk, f"floorp{run}", args.celery
        )
        rate_e, rate_f = celery_rows / elapsed_e, celery_rows / elapsed_f
        log(
            f"(f) raw SQL floor, {args.celery} processes: {elapsed_f:6.2f} s  "
            f"{rate_f:9,.0f} purchases/s  (the same work as (c) in {args.celery} processes, "
            f"members split between them; {celery_rows} rows)"
        )
        log(f"ratio (e)/(f) = {rate_e / rate_f:.2f}")

    if args.profile:
        profile_path = folder / "profile.csv"
        write_file(profile_path, args.profile, members, f"p{run}")
        profiler = cProfile.Profile()
        profiler.enable()
        run_import(partner, profile_path, args.chunk)
        profiler.disable()
        for order in ("tottime", "cumulative"):
            buffer = io.StringIO()
            pstats.Stats(profiler, stream=buffer).sort_stats(order).print_stats(30)
            log(f"--- profile of {args.profile} rows, by {order}")
            log(buffer.getvalue())

    shutil.rmtree(folder, ignore_errors=True)
    if not args.no_check:
        from coalition.selectors import ledger_check

        report = ledger_check()
        log(f"check_ledger: {'ok' if report.ok else 'BROKEN'} ({report.transactions} transactions)")
        for problem in report.problems[:10]:
            log(f"  {problem}")


if __name__ == "__main__":
    main()
