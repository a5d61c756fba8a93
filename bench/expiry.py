"""Expiry at scale: `points_expire_due` over 1,000,000 due lots while burns run, against its
raw-SQL floor, on PostgreSQL.

    .venv/bin/python -m bench.expiry [--lots 1000000] [--chunk N] [--skip-floor]

with DATABASE_URL pointing at a PostgreSQL database of its own (default
postgres://postgres@127.0.0.1:5432/coalition_bench_expiry; the name must contain "bench"):
created if missing and migrated, so the ledger triggers are the real ones. It prints numbers
and asserts nothing about them.

Preparation (not timed), before each timed sweep: the programme set to a fixed 12-month
lifetime (no minimum redemption), one partner, --lots members with wallets (kept between
runs). The ledger tables (transactions, entries, lots) are emptied and loaded again in one
transaction with `session_replication_role = replica` (the ledger triggers off for the load
only, as `manage.py generate_volume` does): one earn of 100 points per member whose lot
expired yesterday (--lots due lots), and for every 50th member a second earn of 1,000 points
whose lot expires next year, so that member can still burn; the wallets' cached balances are
set from their entries, then VACUUM ANALYZE. The ledger is consistent (`check_ledger`).

Timed:
  (a) `points_expire_due(now=…)` in this process, chunk size --chunk (the service's default
      if not given), while a second process burns 1 point at a time (`points_burn`, each its
      own transaction) in a loop at members the sweep is about to reach: it reads the member
      of the newest EXPIRE transaction (where the sweep is) and burns at a member with points
      a little ahead of it, so burns keep running into the chunk the sweep holds locked. Each
      burn's latency is recorded; before the sweep starts the same loop runs 2 s alone, and
      its latencies are the baseline (a burn that waited for no lock). A burn refused because
      the sweep took the points first counts as a burn (it waited just the same).
  (b) the raw-SQL floor: the ledger loaded again, then the same work through psycopg2, the
      same chunk size, one database transaction per chunk: list the next members with due
      lots (as the service does, outside the transaction), lock their wallets FOR UPDATE in
      member-id order, then one statement that computes what is due per member (window sum
      over the lots, earliest first, capped at balance - held), inserts the EXPIRE
      transactions (same metadata), their entries and updates the lots; COMMIT. The
      triggers fire as for the service. No burns run during the floor.

Prints lots/s and seconds for (a) and (b), the ratio (a)/(b), the burns' latency p50 / p99 /
max during the sweep and alone, how many burns waited more than 100 ms for a lock (the
burner's connection has `lock_timeout = 100ms` and burns in a transaction of its own, so
such a burn fails and is counted rather than retried by the service), how long the sweep's
chunk transactions took (p50 / p99 / max: the time the sweep holds its wallet locks, timed
around each chunk's call), and how many checkpoints the server made during the sweep. The
load ends with a CHECKPOINT, so its own writes are not flushed during the timed sweep. The
goal: 1,000,000 lots in <= 60 s, no burn waiting more than 100 ms for a lock.
The django-hordak equivalent is `python -m bench.peer_hordak --only expiry --expiry-lots N`.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from bench import pg

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/coalition_bench_expiry"
GOAL_SECONDS_PER_MILLION = 60.0
GOAL_BURN_WAIT_MS = 100.0
BURNABLE_EVERY = 50
NOW = datetime(2031, 6, 1, 12, 0, tzinfo=UTC)
PARTNER_CODE = "BENCH-EXPIRY"
LOCK_NOT_AVAILABLE = "55P03"


def _db_config(url: str) -> dict:
    return pg.db_config(url, bench="bench.expiry", default_url=DEFAULT_URL)


_connect = pg.connect
ensure_database = pg.ensure_database


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "true")
    import django

    django.setup()


def _log(message: str) -> None:
    print(message, flush=True)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# --------------------------------------------------------------------------- loading


def prepare(members: int) -> dict:
    """Programme, partner and `members` members with wallets (kept between runs)."""
    from django.db import connection

    from coalition.models import Account, Programme
    from coalition.services import programme_get, system_account_id
    from partners.models import Partner

    programme = programme_get()
    programme.expiry_policy = Programme.ExpiryPolicy.FIXED
    programme.expiry_months = 12
    programme.expire_at_month_end = False
    programme.min_redemption_points = 1
    programme.daily_burn_limit = None
    programme.save()
    partner, _ = Partner.objects.get_or_create(
        code=PARTNER_CODE, defaults={"name": "Bench expiry brand", "currency": "USD"}
    )
    system_account_id(Account.Kind.PARTNER_ISSUED, partner_id=partner.pk)
    system_account_id(Account.Kind.PARTNER_REDEEMED, partner_id=partner.pk)
    system_account_id(Account.Kind.BREAKAGE)
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM coalition_member")
        (have,) = cur.fetchone()
        if have < members:
            started = time.perf_counter()
            cur.execute(
                """
                INSERT INTO coalition_member (member_number, email, display_name, status,
                                              password, token_version, created_at)
                SELECT 'X' || lpad(i::text, 15, '0'), 'bench-expiry-' || i || '@bench.invalid',
                       'Bench member ' || i, 'active', '', 1, now()
                  FROM generate_series(%s + 1, %s) AS i
                """,
                [have, members],
            )
            cur.execute(
                """
                INSERT INTO coalition_account (kind, member_id, balance, held, last_activity_at)
                SELECT 'member_wallet', m.id, 0, 0, now() FROM coalition_member m
                 WHERE NOT EXISTS (SELECT 1 FROM coalition_account a WHERE a.member_id = m.id)
                """
            )
            _log(f"  {members - have:,} members added in {time.perf_counter() - started:.1f} s")
        cur.execute("SELECT id FROM coalition_member ORDER BY id LIMIT %s", [members])
        member_ids = [row[0] for row in cur.fetchall()]
    return {"partner": partner, "member_ids": member_ids}


def load_ledger(config: dict, fixture: dict) -> None:
    """Empty the ledger and load one due lot per member (+ a future lot every 50th)."""
    from coalition.models import Account
    from coalition.services import system_account_id

    partner = fixture["partner"]
    issued = system_account_id(Account.Kind.PARTNER_ISSUED, partner_id=partner.pk)
    first, last = fixture["member_ids"][0], fixture["member_ids"][-1]
    started = time.perf_counter()
    conn = _connect(config)
    with conn, conn.cursor() as cur:
        cur.execute(
            "TRUNCATE coalition_entry, coalition_lot, coalition_transaction, coalition_hold CASCADE"
        )
        cur.execute("SET LOCAL session_replication_role = replica")
        cur.execute(
            "UPDATE coalition_account SET balance = 0, held = 0 WHERE kind = 'member_wallet'"
        )
        params = {
            "first": first,
            "last": last,
            "partner": partner.pk,
            "issued": issued,
            "earned": NOW - timedelta(days=366),
            "expired": NOW - timedelta(days=1),
            "later": NOW - timedelta(days=30),
            "future": NOW + timedelta(days=335),
            "every": BURNABLE_EVERY,
        }
        # Earns: one of 100 per member (due), one of 1000 for every 50th member (not due).
        cur.execute(
            """
            CREATE TEMP TABLE bench_earn ON COMMIT DROP AS
            SELECT nextval(pg_get_serial_sequence('coalition_transaction', 'id')) AS id,
                   a.member_id, a.id AS wallet_id, e.points, e.expires_at, e.created_at
              FROM coalition_account a
              CROSS JOIN LATERAL (
                    SELECT 100 AS points, %(expired)s::timestamptz AS expires_at,
                           %(earned)s::timestamptz AS created_at
                    UNION ALL
                    SELECT 1000, %(future)s, %(later)s
                     WHERE mod(a.member_id - %(first)s, %(every)s) = 0) e
             WHERE a.kind = 'member_wallet' AND a.member_id BETWEEN %(first)s AND %(last)s
             ORDER BY a.member_id, e.expires_at
            """,
            params,
        )
        cur.execute(
            """
            INSERT INTO coalition_transaction
                (id, kind, member_id, partner_id, member_points, reference, caller,
                 idempotency_key, request_hash, purchase_currency, created_at, metadata)
            SELECT id, 'earn', member_id, %(partner)s, points, '', 'bench', NULL, '', '',
                   created_at, '{}'::jsonb
              FROM bench_earn
            """,
            params,
        )
        cur.execute(
            """
            INSERT INTO coalition_entry (transaction_id, account_id, points)
            SELECT id, %(issued)s, -points FROM bench_earn
            UNION ALL
            SELECT id, wallet_id, points FROM bench_earn
            """,
            params,
        )
        cur.execute(
            """
            INSERT INTO coalition_lot (member_id, transaction_id, points, remaining, expires_at,
                                       created_at)
            SELECT member_id, id, points, points, expires_at, created_at FROM bench_earn
            """
        )
        cur.execute(
            """
            UPDATE coalition_account a SET balance = s.total
              FROM (SELECT wallet_id, sum(points) AS total FROM bench_earn GROUP BY wallet_id) s
             WHERE a.id = s.wallet_id
            """
        )
    conn.autocommit = True
    with conn.cursor() as cur:
        for table in ("lot", "account", "transaction", "member", "entry"):
            cur.execute(f"VACUUM ANALYZE coalition_{table}")
        # The load's own writes to disk, now, not during the timed sweep: left to the next
        # checkpoint and the kernel's writeback, they stalled the sweep's first commits for
        # ~0.8 s (WAL fsync queued behind a gigabyte of data pages).
        cur.execute("CHECKPOINT")
        cur.execute("SELECT count(*) FROM coalition_lot WHERE expires_at <= %s", [NOW])
        (due,) = cur.fetchone()
    conn.close()
    _log(f"  ledger loaded: {due:,} due lots in {time.perf_counter() - started:.1f} s")


# --------------------------------------------------------------------------- the burner


def _burner(fixture_ids: dict, chunk: int, stop, ready, queue) -> None:
    """Burn 1 point at a time at members just ahead of the sweep; put the latencies."""
    from django.db import OperationalError, connection, connections, transaction

    connections.close_all()
    from coalition.errors import InsufficientPoints
    from coalition.models import Member
    from coalition.services import points_burn
    from partners.models import Partner

    partner = Partner.objects.get(pk=fixture_ids["partner"])
    burnable = fixture_ids["burnable"]
    members = Member.objects.in_bulk(burnable)
    # The burner stands for an API worker, whose heap does not hold 20,000 members: its own
    # garbage collections walking them would count as time the burns waited for the sweep.
    gc.freeze()
    rng = random.Random(7)
    import bisect

    last_seen = [burnable[0] - 1]

    def frontier() -> int:
        # The newest transactions by id (a backward primary-key scan of a few rows; a filter
        # on the kind would let the planner, whose statistics predate the sweep, scan the
        # table): the sweep writes a chunk of EXPIRE transactions at a time.
        with connection.cursor() as cur:
            cur.execute(
                "SELECT kind, member_id FROM coalition_transaction ORDER BY id DESC LIMIT 16"
            )
            expired = [member_id for kind, member_id in cur.fetchall() if kind == "expire"]
        if expired:
            last_seen[0] = max(expired)
        return last_seen[0]

    phases: dict[str, list[float]] = {"alone": [], "sweep": []}
    refused = {"alone": 0, "sweep": 0}
    # The goal, enforced by the server: a burn whose wait for a lock passes 100 ms fails.
    # Its latency (below) also counts its own work, which on 2 busy cores the sweep slows too.
    waited_too_long = {"alone": 0, "sweep": 0}
    with connection.cursor() as cur:
        cur.execute(f"SET lock_timeout = '{GOAL_BURN_WAIT_MS:.0f}ms'")
    ready.set()
    phase = "alone"
    while not stop.is_set():
        if phase == "alone" and fixture_ids["sweep_started"].is_set():
            phase = "sweep"
        at = frontier()
        # A member with points within the next two chunks of members.
        start = bisect.bisect_right(burnable, at)
        end = bisect.bisect_right(burnable, at + 2 * chunk)
        if start >= len(burnable):
            time.sleep(0.001)
            continue
        member_id = burnable[rng.randrange(start, max(end, start + 1))]
        began = time.perf_counter()
        try:
            # In a transaction of the burner's own, so that a lock timeout reaches it here
            # rather than being retried by the service.
            with transaction.atomic():
                points_burn(
                    caller="bench:burn",
                    idempotency_key=None,
                    member=members[member_id],
                    partner=partner,
                    points=1,
                    now=NOW,
                )
        except InsufficientPoints:
            refused[phase] += 1
        except OperationalError as exc:
            if getattr(exc.__cause__, "pgcode", None) != LOCK_NOT_AVAILABLE:
                raise
            waited_too_long[phase] += 1
        phases[phase].append(time.perf_counter() - began)
    queue.put((phases, refused, waited_too_long))


# --------------------------------------------------------------------------- the floor

FLOOR_DUE = """
    WITH due AS (
        SELECT l.member_id, l.id AS lot_id, a.id AS wallet_id, l.expires_at,
               LEAST(l.remaining,
                     GREATEST(GREATEST(a.balance - a.held, 0)
                              - (sum(l.remaining) OVER w - l.remaining), 0)) AS take
          FROM coalition_lot l JOIN coalition_account a ON a.member_id = l.member_id
         WHERE l.member_id = ANY(%(members)s) AND l.remaining > 0 AND l.expires_at <= %(now)s
        WINDOW w AS (PARTITION BY l.member_id ORDER BY l.expires_at NULLS LAST, l.id)
    ), taken AS (
        SELECT * FROM due WHERE take > 0
    ), per_member AS (
        SELECT member_id, wallet_id,
               nextval(pg_get_serial_sequence('coalition_transaction', 'id')) AS txn_id,
               sum(take) AS points,
               jsonb_agg(jsonb_build_array(lot_id, take)
                         ORDER BY expires_at NULLS LAST, lot_id) AS lots
          FROM taken GROUP BY member_id, wallet_id
    ), txns AS (
        INSERT INTO coalition_transaction
            (id, kind, member_id, member_points, reference, caller, idempotency_key,
             request_hash, purchase_currency, created_at, metadata)
        SELECT txn_id, 'expire', member_id, -points, '', 'system:expiry', NULL, '', '',
               %(now)s, jsonb_build_object('lots', lots, 'policy', 'fixed')
          FROM per_member ORDER BY member_id
        RETURNING id
    ), entries AS (
        INSERT INTO coalition_entry (transaction_id, account_id, points)
        SELECT txn_id, wallet_id, -points FROM per_member
        UNION ALL
        SELECT txn_id, %(breakage)s, points FROM per_member
    ), lots AS (
        UPDATE coalition_lot l SET remaining = l.remaining - t.take
          FROM taken t WHERE l.id = t.lot_id
    )
    SELECT coalesce(sum(points), 0) FROM per_member
"""

FLOOR_LIST = """
    SELECT DISTINCT member_id FROM coalition_lot
     WHERE remaining > 0 AND expires_at <= %s AND member_id > %s
     ORDER BY member_id LIMIT %s
"""


def floor_sweep(config: dict, chunk: int, breakage: int) -> tuple[int, int]:
    """The same work in psycopg2: (points expired, chunks)."""
    conn = _connect(config)
    expired = chunks = 0
    last = 0
    with conn.cursor() as cur:
        while True:
            conn.autocommit = True
            cur.execute(FLOOR_LIST, [NOW, last, chunk])
            members = [row[0] for row in cur.fetchall()]
            if not members:
                break
            conn.autocommit = False
            cur.execute(
                "SELECT id FROM coalition_account WHERE member_id = ANY(%s) "
                "AND kind = 'member_wallet' ORDER BY member_id FOR UPDATE",
                [members],
            )
            cur.execute(FLOOR_DUE, {"members": members, "now": NOW, "breakage": breakage})
            expired += cur.fetchone()[0]
            conn.commit()
            chunks += 1
            last = members[-1]
    conn.close()
    return expired, chunks


# --------------------------------------------------------------------------- main


def _setting(name: str) -> str:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT current_setting(%s)", [name])
        return cur.fetchone()[0]


def _checkpoints() -> int:
    """Checkpoints the server has started since its statistics were reset."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
        return cur.fetchone()[0]


def _ledger_ok() -> str:
    from coalition import selectors

    report = selectors.ledger_check()
    return "clean" if report.ok else f"PROBLEMS: {report}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.expiry", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--lots", type=int, default=1_000_000, help="due lots (1,000,000)")
    parser.add_argument("--chunk", type=int, default=None, help="members per transaction")
    parser.add_argument("--skip-floor", action="store_true", help="no raw-SQL floor")
    parser.add_argument("--no-check", action="store_true", help="skip check_ledger after")
    args = parser.parse_args(argv)

    url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    config = _db_config(url)
    ensure_database(config)
    setup_django(url)
    from django.core.management import call_command
    from django.db import connections

    from coalition.models import Account
    from coalition.services import expiry, points_expire_due, system_account_id
    from coalition.services.expiry import DEFAULT_CHUNK

    call_command("migrate", interactive=False, verbosity=0)
    chunk = args.chunk or DEFAULT_CHUNK
    _log(f"bench.expiry on {config['NAME']}: {args.lots:,} due lots, chunk {chunk} members")
    fixture = prepare(args.lots)
    breakage = system_account_id(Account.Kind.BREAKAGE)

    # (a) the service, with burns running at the sweep's front.
    load_ledger(config, fixture)
    ids = fixture["member_ids"]
    burnable = ids[::BURNABLE_EVERY]
    connections.close_all()
    ctx = multiprocessing.get_context("fork")
    stop, ready, sweep_started = ctx.Event(), ctx.Event(), ctx.Event()
    queue = ctx.Queue()
    burner = ctx.Process(
        target=_burner,
        args=(
            {
                "partner": fixture["partner"].pk,
                "burnable": burnable,
                "sweep_started": sweep_started,
            },
            chunk,
            stop,
            ready,
            queue,
        ),
    )
    burner.start()
    ready.wait(60)
    time.sleep(2.0)  # the burns' baseline, alone
    sweep_started.set()
    chunk_times: list[float] = []
    chunk_call = expiry._expire_chunk

    def timed_chunk(*chunk_args, **chunk_kwargs):
        began = time.perf_counter()
        try:
            return chunk_call(*chunk_args, **chunk_kwargs)
        finally:
            chunk_times.append((time.perf_counter() - began) * 1000)

    expiry._expire_chunk = timed_chunk
    checkpoints_before = _checkpoints()
    started = time.perf_counter()
    expired = points_expire_due(now=NOW, batch_size=chunk)
    seconds = time.perf_counter() - started
    expiry._expire_chunk = chunk_call
    stop.set()
    phases, refused, waited_too_long = queue.get()
    checkpoints = _checkpoints() - checkpoints_before
    burner.join()
    rate = args.lots / seconds
    _log(
        f"(a) points_expire_due: {seconds:.1f} s for {args.lots:,} lots ({rate:,.0f} lots/s), "
        f"{expired:,} points expired"
    )
    _log(
        f"    chunk transactions (wallets locked): n {len(chunk_times)}, "
        f"p50 {statistics.median(chunk_times):.1f} ms, p99 {_pct(chunk_times, 0.99):.1f} ms, "
        f"max {max(chunk_times):.1f} ms"
    )
    for phase in ("sweep", "alone"):
        times = [t * 1000 for t in phases[phase]]
        if times:
            _log(
                f"    burns {'during the sweep' if phase == 'sweep' else 'alone (baseline)'}: "
                f"n {len(times)}, p50 {statistics.median(times):.1f} ms, "
                f"p99 {_pct(times, 0.99):.1f} ms, max {max(times):.1f} ms "
                f"({refused[phase]} refused: points already expired; "
                f"{waited_too_long[phase]} waited > {GOAL_BURN_WAIT_MS:.0f} ms for a lock)"
            )
    _log(
        f"    checkpoints during the sweep: {checkpoints} "
        f"(max_wal_size {_setting('max_wal_size')}, checkpoint_timeout "
        f"{_setting('checkpoint_timeout')})"
    )
    goal = GOAL_SECONDS_PER_MILLION * args.lots / 1_000_000
    wait_goal = f"burns waiting <= {GOAL_BURN_WAIT_MS:.0f} ms"
    _log(f"    goal: {goal:.0f} s for {args.lots:,} lots, {wait_goal}")
    if not args.no_check:
        _log(f"    check_ledger: {_ledger_ok()}")

    if not args.skip_floor:
        load_ledger(config, fixture)
        started = time.perf_counter()
        floor_points, chunks = floor_sweep(config, chunk, breakage)
        floor_seconds = time.perf_counter() - started
        floor_rate = args.lots / floor_seconds
        _log(
            f"(b) raw-SQL floor: {floor_seconds:.1f} s for {args.lots:,} lots "
            f"({floor_rate:,.0f} lots/s), {floor_points:,} points, {chunks} chunks"
        )
        _log(f"(a)/(b) {rate / floor_rate:.2f} × floor")
        if not args.no_check:
            _log(f"    check_ledger: {_ledger_ok()}")


if __name__ == "__main__":
    main()
