"""Ledger write throughput: the points services against a raw-SQL floor, on PostgreSQL.

Run it from the project root:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/coalition_bench \\
        .venv/bin/python -m bench.ledger [--seconds N] [--count N] [--members N]

It prints numbers and asserts nothing about them. It needs its own PostgreSQL database
(default `coalition_bench`; the name must contain "bench"): the database is created if
missing and Django's migrations are run into it, so the ledger triggers of
coalition/sql/postgresql_ledger_rules.sql fire for every workload. SQLite is refused.
Settings are `config.settings.dev` with DEBUG off (unless DEBUG is set in the environment),
as DEBUG's query log would be measured too.

Preparation (not timed): the programme, an earning partner and a redeeming partner, M
members created in bulk with their member_wallet accounts, and an initial balance for
every member through `points_earn` (so the burns have lots to consume).

Workloads, each for a fixed time (--seconds, default 10) or a fixed number (--count) of
transactions, each transaction its own database transaction, members taken round-robin:

  (a)  earn, raw SQL floor: one psycopg2 connection sending the statement `points_earn`
       sends on PostgreSQL (coalition/services/posting.py _CREDIT_SQL: replay check, wallet
       lock with the activity, transaction, legs and lot in one statement) with the same
       values: BEGIN, the statement, COMMIT. Like the service, it sends the statement as a
       server-side prepared statement (coalition/prepared.py; plain text when
       COALITION_PREPARED_STATEMENTS=false). What is left between (a) and (b1) is Django and
       the service's Python.
  (a2) the same floor in two processes on disjoint halves of the members.
  (b1) `coalition.services.points_earn` through Django, one process.
  (b2) `points_earn` in two processes (own connections, disjoint member halves).
  (c1) `coalition.services.points_burn`, one process (100 points to the second partner).
  (c2) burn, raw SQL floor: the two statements `points_burn` sends (_REPLAY_OR_TOUCH_SQL:
       replay check and wallet lock; _SPEND_SQL: lots consumed in expiry order, transaction
       with metadata.lots, legs), the spendable check between them: BEGIN, two, COMMIT.

Workloads run one after another, each after 50 untimed warm-up transactions. For each:
transactions, transactions/s, p50 and p99 latency in ms (two processes: the sum of their
rates over the longest run, percentiles over both). Then:

  - the statements one earn and one burn send (django.test.utils.CaptureQueriesContext;
    --show-queries lists them);
  - a breakdown of one earn and one burn (--breakdown N, default 300 calls, 0 skips it):
    each statement's round trip, COMMIT, and the rest, which is Python;
  - with --profile N, a cProfile of N earns;
  - last, the ratio (b1)/(a), with the goal (b1) >= 0.35 x (a).

Other options: --only a,b1 runs only some workloads; --tiers adds three tiers that nobody
reaches, so that every earn pays the tier-upgrade check (without it there are no tiers, and
an earn only reads the empty tier list).

Each run enrols new members (and leaves them); --recreate drops the database and builds it
afresh (needed too when the migrations were rewritten since it was built).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing
import os
import pstats
import re
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bench import pg
from bench.common import members_bulk_create

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/coalition_bench"
GOAL = 0.35
EARN_POINTS = 100
BURN_POINTS = 100  # the programme's default minimum redemption
INITIAL_POINTS = 5_000_000
WARMUP = 50
EARN_PARTNER = "BENCH-EARN"
BURN_PARTNER = "BENCH-BURN"

# --------------------------------------------------------------------------- the database


def _db_config(url: str) -> dict:
    import environ

    if url.split(":", 1)[0].lower().startswith("sqlite"):
        sys.exit(
            "bench.ledger measures PostgreSQL and refuses SQLite: set DATABASE_URL to a "
            f"PostgreSQL database of its own, e.g. {DEFAULT_URL}"
        )
    config = environ.Env.db_url_config(url)
    if "postgresql" not in config["ENGINE"]:
        sys.exit(f"bench.ledger needs PostgreSQL, not {config['ENGINE']} ({url})")
    if "bench" not in config["NAME"]:
        sys.exit(
            f"bench.ledger writes a lot of rows; it only runs on a database of its own whose "
            f"name contains 'bench' (got {config['NAME']!r}), e.g. {DEFAULT_URL}"
        )
    return config


_connect = pg.connect


def ensure_database(config: dict, recreate: bool = False) -> bool:
    """Create the bench database if it is missing (drop it first with recreate). True when
    it was created."""
    from psycopg2 import sql

    conn = _connect(config, dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            if recreate:
                cur.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(config["NAME"])
                    )
                )
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]])
            if cur.fetchone():
                return False
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(config["NAME"])))
            return True
    finally:
        conn.close()


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    os.environ.setdefault("DEBUG", "false")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


# --------------------------------------------------------------------------- fixture


@dataclass(frozen=True)
class Fixture:
    url: str
    run: str  # makes the idempotency keys of this run unique
    earn_partner_id: int
    burn_partner_id: int
    member_ids: list[int]


def set_tiers(enabled: bool) -> int:
    """With --tiers, three tiers no member reaches during the bench (so every earn pays the
    qualifying-points check of an upgrade but never upgrades); without, none of them."""
    from django.apps import apps

    try:
        tier = apps.get_model("coalition", "Tier")
    except LookupError:
        return 0
    if enabled:
        for n, code in enumerate(("BENCH-BASE", "BENCH-SILVER", "BENCH-GOLD")):
            tier.objects.get_or_create(
                code=code, defaults={"name": code.title(), "qualifying_points": n * 10**15}
            )
    else:
        tier.objects.filter(code__startswith="BENCH-").delete()
    return tier.objects.count()


def prepare(url: str, members: int, log: Callable[[str], None]) -> Fixture:

    from coalition.services import points_earn, programme_get
    from partners.models import Partner

    programme_get()  # created with its defaults if missing
    earn_partner, _ = Partner.objects.get_or_create(
        code=EARN_PARTNER, defaults={"name": "Bench earning partner", "currency": "USD"}
    )
    burn_partner, _ = Partner.objects.get_or_create(
        code=BURN_PARTNER, defaults={"name": "Bench redeeming partner", "currency": "USD"}
    )
    run = secrets.token_hex(4)
    started = time.perf_counter()
    created = members_bulk_create(members, label="ledger", digit="9")
    log(f"  {members} members and wallets in {time.perf_counter() - started:.2f} s")

    started = time.perf_counter()
    caller = f"partner:{burn_partner.pk}"
    for n, member in enumerate(created):
        points_earn(
            caller=caller,
            idempotency_key=f"bench-{run}-seed-{n}",
            member=member,
            partner=burn_partner,
            partner_points=INITIAL_POINTS,
        )
    log(f"  {members} opening balances via points_earn in {time.perf_counter() - started:.2f} s")
    # Statistics for what was just loaded, before anything is timed: on a new database the
    # planner otherwise plans the hot statements for empty tables until autovacuum's first
    # ANALYZE (measured: earns at 356/s instead of 634/s in the first run after --recreate).
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return Fixture(
        url=url,
        run=run,
        earn_partner_id=earn_partner.pk,
        burn_partner_id=burn_partner.pk,
        member_ids=[m.pk for m in created],
    )


# --------------------------------------------------------------------------- workloads
#
# Each builder returns (op, close): op(n) runs transaction number n, one database
# transaction, for member_ids[n % len(member_ids)].


def _execute(cur, statement, params: dict) -> None:
    """A service statement on a raw psycopg2 cursor, as the service sends it: prepared on
    first use on this connection (coalition/prepared.py), unless the setting turns that off."""
    from django.conf import settings

    if not settings.COALITION.get("PREPARED_STATEMENTS", True):
        cur.execute(statement.sql, params)
        return
    statement.run(cur, params, prepared=_PREPARED.setdefault(cur.connection, set()))


_PREPARED: dict[object, set[str]] = {}  # per connection (kept open, so never reused)


def _earn_floor(fixture: Fixture, member_ids: list[int], tag: str):
    """The earn's own statement (posting._CREDIT_SQL: replay check, wallet lock with the
    activity, transaction, legs, lot) through psycopg2: BEGIN, the statement, COMMIT."""
    from coalition.models import Account
    from coalition.services import lot_expiry, programme_get, request_fingerprint
    from coalition.services.posting import CREDIT, system_account_id

    programme = programme_get()
    partner_id = fixture.earn_partner_id
    issued = system_account_id(Account.Kind.PARTNER_ISSUED, partner_id=partner_id)
    caller = f"partner:{partner_id}"
    conn = _connect(_db_config(fixture.url))
    cur = conn.cursor()

    def op(n: int) -> None:
        member_id = member_ids[n % len(member_ids)]
        request_hash = request_fingerprint(
            "points_earn",
            member=member_id,
            partner=partner_id,
            partner_points=EARN_POINTS,
            operator_points=0,
            kind="earn",
            reference="",
            purchase_amount=None,
            purchase_currency="",
        )
        now = datetime.now(UTC)
        params = {
            "caller": caller,
            "key": f"{tag}-{n}",
            "now": now,
            "member": member_id,
            "kind": "earn",
            "partner": partner_id,
            "points": EARN_POINTS,
            "reference": "",
            "hash": request_hash,
            "amount": None,
            "currency": "",
            "metadata": "{}",
            "leg_accounts": [issued],
            "leg_points": [-EARN_POINTS],
            "expires": lot_expiry(programme, now),
        }
        try:
            _execute(cur, CREDIT, params)
            if cur.fetchone()[1] is None:
                raise RuntimeError(f"bench earn {tag}-{n} wrote nothing")
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    return op, conn.close


def _burn_floor(fixture: Fixture, member_ids: list[int], tag: str):
    """The burn's own two statements (posting._REPLAY_OR_TOUCH_SQL: replay check and wallet
    lock; posting._SPEND_SQL: lots, transaction, legs) through psycopg2, with the balance
    check between them: BEGIN, the two statements, COMMIT."""
    from coalition.models import Account
    from coalition.services import request_fingerprint
    from coalition.services.posting import REPLAY_OR_TOUCH, SPEND, system_account_id

    partner_id = fixture.burn_partner_id
    redeemed = system_account_id(Account.Kind.PARTNER_REDEEMED, partner_id=partner_id)
    caller = f"partner:{partner_id}"
    conn = _connect(_db_config(fixture.url))
    cur = conn.cursor()

    def op(n: int) -> None:
        member_id = member_ids[n % len(member_ids)]
        request_hash = request_fingerprint(
            "points_burn", member=member_id, partner=partner_id, points=BURN_POINTS, reference=""
        )
        now = datetime.now(UTC)
        key = f"{tag}-{n}"
        try:
            _execute(
                cur,
                REPLAY_OR_TOUCH,
                {"caller": caller, "key": key, "now": now, "member": member_id},
            )
            _prior, wallet_id, _kind, _member, balance, held = cur.fetchone()
            if balance < 0 or BURN_POINTS > balance - held:
                raise RuntimeError(f"bench wallet {wallet_id} ran out of points")
            _execute(
                cur,
                SPEND,
                {
                    "member": member_id,
                    "to_take": BURN_POINTS,
                    "kind": "burn",
                    "partner": partner_id,
                    "charity": None,
                    "points": BURN_POINTS,
                    "reference": "",
                    "caller": caller,
                    "key": key,
                    "hash": request_hash,
                    "now": now,
                    "metadata": "{}",
                    "wallet": wallet_id,
                    "counter": redeemed,
                },
            )
            cur.fetchone()
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    return op, conn.close


def _earn_service(fixture: Fixture, member_ids: list[int], tag: str):
    from coalition.models import Member
    from coalition.services import points_earn
    from partners.models import Partner

    members = Member.objects.in_bulk(member_ids)
    ordered = [members[pk] for pk in member_ids]
    partner = Partner.objects.get(pk=fixture.earn_partner_id)
    caller = f"partner:{partner.pk}"

    def op(n: int) -> None:
        points_earn(
            caller=caller,
            idempotency_key=f"{tag}-{n}",
            member=ordered[n % len(ordered)],
            partner=partner,
            partner_points=EARN_POINTS,
        )

    return op, _close_django


def _burn_service(fixture: Fixture, member_ids: list[int], tag: str):
    from coalition.models import Member
    from coalition.services import points_burn
    from partners.models import Partner

    members = Member.objects.in_bulk(member_ids)
    ordered = [members[pk] for pk in member_ids]
    partner = Partner.objects.get(pk=fixture.burn_partner_id)
    caller = f"partner:{partner.pk}"

    def op(n: int) -> None:
        points_burn(
            caller=caller,
            idempotency_key=f"{tag}-{n}",
            member=ordered[n % len(ordered)],
            partner=partner,
            points=BURN_POINTS,
        )

    return op, _close_django


def _close_django() -> None:
    from django.db import connections

    connections.close_all()


BUILDERS = {
    "earn-floor": _earn_floor,
    "earn-service": _earn_service,
    "burn-service": _burn_service,
    "burn-floor": _burn_floor,
}


def run_loop(op: Callable[[int], None], seconds: float, count: int | None):
    """Warm up, then run op until the time or count is reached: (latencies s, elapsed s)."""
    for n in range(WARMUP):
        op(n)
    latencies: list[float] = []
    n = WARMUP
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        t0 = time.perf_counter()
        op(n)
        t1 = time.perf_counter()
        latencies.append(t1 - t0)
        n += 1
        if (len(latencies) >= count) if count else (t1 >= deadline):
            break
    return latencies, time.perf_counter() - started


def _worker(workload, fixture, member_ids, tag, seconds, count, barrier, results) -> None:
    """One process of a multi-process workload (spawned: sets Django up itself)."""
    setup_django(fixture.url)
    op, close = BUILDERS[workload](fixture, member_ids, tag)
    barrier.wait()
    try:
        results.put(run_loop(op, seconds, count))
    finally:
        close()


@dataclass
class Result:
    label: str
    name: str
    procs: int
    latencies: list[float]
    elapsed: float

    @property
    def txns(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.txns / self.elapsed

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        pos = (len(ordered) - 1) * q
        low = int(pos)
        high = min(low + 1, len(ordered) - 1)
        return (ordered[low] + (ordered[high] - ordered[low]) * (pos - low)) * 1000


def run_workload(label, name, workload, fixture, procs, seconds, count) -> Result:
    tag = f"bench-{fixture.run}-{label}"
    ids = fixture.member_ids
    if procs == 1:
        op, close = BUILDERS[workload](fixture, ids, tag)
        try:
            latencies, elapsed = run_loop(op, seconds, count)
        finally:
            if workload.endswith("floor"):
                close()
        return Result(label, name, 1, latencies, elapsed)

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(procs)
    results = ctx.Queue()
    size = len(ids) // procs
    workers = [
        ctx.Process(
            target=_worker,
            args=(workload, fixture, ids[i * size : (i + 1) * size], f"{tag}-p{i}")
            + (seconds, count, barrier, results),
        )
        for i in range(procs)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
        if worker.exitcode:
            sys.exit(f"{label}: a worker process failed (exit code {worker.exitcode})")
    latencies = [lat for worker_lats, _ in outcomes for lat in worker_lats]
    return Result(label, name, procs, latencies, max(elapsed for _, elapsed in outcomes))


# --------------------------------------------------------------------------- inspection


def _label(sql: str) -> str:
    """A short name for a statement: verb, table, and what is special about it."""
    sql = " ".join(sql.split()).replace('"', "")
    verb = sql.split(" ", 1)[0]
    if verb in ("BEGIN", "COMMIT", "ROLLBACK"):
        return verb
    if verb == "DECLARE":
        return "DECLARE cursor FOR " + _label(sql.split(" FOR ", 1)[1])
    table = re.search(r"(?:FROM|INTO|UPDATE) (\w+)", sql)
    label = f"{verb} {table.group(1) if table else '?'}"
    if verb == "UPDATE":
        label += " SET " + sql.split(" SET ", 1)[1].split(" ", 1)[0]
    if verb == "SELECT" and "FOR UPDATE" in sql:
        label += " FOR UPDATE"
    return label


def count_queries(fixture: Fixture, show: bool) -> list[str]:
    """Statements one earn and one burn send, as CaptureQueriesContext sees them."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    lines = []
    for workload, verb in (("earn-service", "earn"), ("burn-service", "burn")):
        op, _ = BUILDERS[workload](fixture, fixture.member_ids, f"bench-{fixture.run}-q{verb}")
        op(0)  # caches warm
        # With DEBUG on the log may be full (9,000 entries): its length no longer moves.
        connection.queries_log.clear()
        with CaptureQueriesContext(connection) as captured:
            op(1)
        sqls = [q["sql"] for q in captured.captured_queries]
        statements = [sql for sql in sqls if _label(sql) not in ("BEGIN", "COMMIT")]
        lines.append(
            f"queries per {verb} (CaptureQueriesContext): {len(sqls)} = BEGIN + "
            f"{len(statements)} statements + COMMIT"
        )
        if show:
            lines.extend(f"    {' '.join(sql.split())[:160]}" for sql in sqls)
    return lines


def breakdown(fixture: Fixture, workload: str, ops: int) -> list[str]:
    """Where the time of one service call goes: each statement's round trip (time inside
    cursor.execute, the server's work included), COMMIT (deferred triggers run there), and
    the rest, which is Python: the ORM building SQL and model instances, the service logic,
    and a server-side cursor's FETCH/CLOSE round trips, which bypass cursor.execute."""
    from django.db import connection

    per_statement: dict[tuple[int, str], float] = {}
    seq: list[int] = [0]
    commits: list[float] = []

    def timed_execute(execute, sql, params, many, context):
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            label = _label(sql)
            if getattr(context["cursor"].cursor, "name", None):
                label = f"DECLARE cursor FOR {label}"  # psycopg2 adds DECLARE itself
            if seq[0] == 0:
                label += " (+ BEGIN)"  # psycopg2 sends BEGIN before the first statement
            key = (seq[0], label)
            per_statement[key] = per_statement.get(key, 0.0) + time.perf_counter() - t0
            seq[0] += 1

    tag = f"bench-{fixture.run}-bd{workload}"
    op, _ = BUILDERS[workload](fixture, fixture.member_ids, tag)
    for n in range(WARMUP):
        op(n)
    connection.ensure_connection()
    original_commit = connection._commit

    def timed_commit():
        t0 = time.perf_counter()
        try:
            return original_commit()
        finally:
            commits.append(time.perf_counter() - t0)

    connection._commit = timed_commit
    try:
        with connection.execute_wrapper(timed_execute):
            started = time.perf_counter()
            for n in range(WARMUP, WARMUP + ops):
                seq[0] = 0
                op(n)
            total = time.perf_counter() - started
    finally:
        del connection._commit
    in_execute = sum(per_statement.values())
    in_commit = sum(commits)
    ms = 1000 / ops
    lines = [f"{workload}: {total * ms:.2f} ms per call, mean of {ops}"]
    for (index, label), seconds in sorted(per_statement.items()):
        lines.append(f"    {index + 1:2d}. {label:46}{seconds * ms:7.3f} ms")
    lines.append(f"        {'COMMIT (deferred balance checks)':46}{in_commit * ms:7.3f} ms")
    rest = total - in_execute - in_commit
    lines.append(f"        {'round trips total':46}{(in_execute + in_commit) * ms:7.3f} ms")
    lines.append(f"        {'Python (ORM, service code, cursor FETCH)':46}{rest * ms:7.3f} ms")
    return lines


def profile_earns(fixture: Fixture, earns: int, top: int = 30) -> str:
    op, _ = BUILDERS["earn-service"](fixture, fixture.member_ids, f"bench-{fixture.run}-prof")
    for n in range(WARMUP):
        op(n)
    profiler = cProfile.Profile()
    profiler.enable()
    for n in range(WARMUP, WARMUP + earns):
        op(n)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ledger", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="per workload (default 10)")
    parser.add_argument(
        "--count",
        type=int,
        default=None,
        help="transactions per workload and process, instead of --seconds",
    )
    parser.add_argument("--members", type=int, default=2000, help="members (default 2000)")
    parser.add_argument("--show-queries", action="store_true", help="list each statement")
    parser.add_argument(
        "--recreate",
        action="store_true",
        help="drop the bench database and build it afresh first",
    )
    parser.add_argument(
        "--only",
        type=lambda text: text.split(","),
        default=None,
        metavar="LABELS",
        help="run only these workloads, e.g. a,b1 (a and b1 are always needed)",
    )
    parser.add_argument(
        "--tiers",
        action="store_true",
        help="with three (unreachable) tiers, so each earn checks for an upgrade",
    )
    parser.add_argument(
        "--breakdown",
        type=int,
        default=300,
        metavar="N",
        help="time each statement over N earns and N burns (default 300, 0: skip)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also cProfile N earns through points_earn",
    )
    args = parser.parse_args(argv)
    if args.members < 4:
        parser.error("--members must be at least 4")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    load_before = os.getloadavg()[0]
    url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    config = _db_config(url)
    if ensure_database(config, recreate=args.recreate):
        log(f"created database {config['NAME']}")
    setup_django(url)
    from django.conf import settings
    from django.core.management import call_command

    log(f"migrating {config['NAME']} ...")
    from django.db.migrations.exceptions import InconsistentMigrationHistory

    try:
        call_command("migrate", interactive=False, verbosity=0)
    except InconsistentMigrationHistory as exc:
        sys.exit(
            f"{exc}\nThe migrations changed since this database was built: run again with "
            "--recreate to drop and rebuild it."
        )
    try:
        call_command("makemigrations", check=True, dry_run=True, verbosity=0)
    except SystemExit:
        sys.exit(
            "the models have changes that no migration holds yet, so the database cannot "
            "match them: write the migration first (manage.py makemigrations)"
        )
    log(f"preparing (DEBUG={settings.DEBUG}, {args.members} members) ...")
    tiers = set_tiers(args.tiers)
    fixture = prepare(url, args.members, log)

    plan = [
        ("a", "earn, raw SQL floor", "earn-floor", 1),
        ("a2", "earn, raw SQL floor", "earn-floor", 2),
        ("b1", "earn, points_earn", "earn-service", 1),
        ("b2", "earn, points_earn", "earn-service", 2),
        ("c1", "burn, points_burn", "burn-service", 1),
        ("c2", "burn, raw SQL floor", "burn-floor", 1),
    ]
    if args.only:
        unknown = set(args.only) - {label for label, *_ in plan}
        if unknown or not {"a", "b1"} <= set(args.only):
            parser.error("--only takes labels among a,a2,b1,b2,c1,c2 and needs a and b1")
        plan = [step for step in plan if step[0] in args.only]
    results: dict[str, Result] = {}
    for label, name, workload, procs in plan:
        how = f"{args.count} each" if args.count else f"{args.seconds:g} s"
        log(f"({label}) {name}, {procs} process(es), {how} ...")
        results[label] = run_workload(
            label, name, workload, fixture, procs, args.seconds, args.count
        )

    query_lines = count_queries(fixture, args.show_queries)
    if args.breakdown:
        log(f"timing the statements of {args.breakdown} earns and burns ...")
        for workload in ("earn-service", "burn-service"):
            print("\n".join(breakdown(fixture, workload, args.breakdown)))
    if args.profile:
        log(f"profiling {args.profile} earns ...")
        print(profile_earns(fixture, args.profile))

    server = _connect(config)
    with server.cursor() as cur:
        cur.execute("SHOW server_version")
        version = cur.fetchone()[0]
        cur.execute("SHOW synchronous_commit")
        sync = cur.fetchone()[0]
    server.close()

    print()
    print(
        f"PostgreSQL {version} (synchronous_commit={sync}), database {config['NAME']}, "
        f"{args.members} members, {tiers} tiers, {os.cpu_count()} CPUs, "
        f"DEBUG={settings.DEBUG}, load average before {load_before:.2f}"
    )
    header = f"{'':5}{'workload':24}{'procs':>6}{'txns':>9}{'tx/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
    print(header)
    print("-" * len(header))
    for r in results.values():
        print(
            f"({r.label})".ljust(5)
            + f"{r.name:24}{r.procs:>6}{r.txns:>9}{r.rate:>10.0f}{r.pct(0.5):>9.2f}"
            + f"{r.pct(0.99):>9.2f}"
        )
    print("-" * len(header))
    for line in query_lines:
        print(line)

    def ratio(x: str, y: str) -> float:
        return results[x].rate / results[y].rate

    for x, y, what in (
        ("b2", "b1", "points_earn 2 procs / 1 proc"),
        ("a2", "a", "floor 2 procs / 1 proc      "),
        ("c1", "c2", "points_burn / burn floor    "),
    ):
        if x in results and y in results:
            print(f"{what} {f'({x})/({y})':10}= {ratio(x, y):.2f}")
    met = ratio("b1", "a") >= GOAL
    print(
        f"RATIO points_earn / raw SQL floor (b1)/(a) = {ratio('b1', 'a'):.2f} "
        f"(goal >= {GOAL}: {'met' if met else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
