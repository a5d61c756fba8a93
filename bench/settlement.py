"""Settlement run computation at scale: 1,000,000 ledger transactions, one run.

Run it from the project root:

    .venv/bin/python -m bench.settlement [--transactions N] [--members N] [--repeat N]
        [--reuse] [--explain]

with DATABASE_URL pointing at a PostgreSQL database of its own (default
postgres://postgres@127.0.0.1:5432/coalition_bench_settlement; the name must contain
"bench"). The database is dropped and created again, migrated, and loaded (not timed):

- the programme, 50 partners (each with terms from 90 days ago and new terms from 15 days
  ago, so the run prices across a terms change), 5 charities, --members members (default
  50,000) with their wallets;
- --transactions ledger transactions (default 1,000,000) with two entries each, written by
  two INSERT ... SELECT over generate_series straight into coalition_transaction and
  coalition_entry, spread over the last 30 days: 45 % earns, 5 % partner-funded bonuses,
  30 % burns, 5 % donations, 3 % sponsor matches, 4 % expiries, 5 % partial earn reversals,
  3 % partial burn reversals. The ledger's USER triggers (append-only guards, per-row wallet
  posting, the deferred balance check) are disabled for the load only, in this database only;
  the wallets' cached balances are then set from their entries in one statement, each
  positive balance put in one lot, and the triggers enabled again, so the ledger is
  consistent (`manage.py check_ledger` passes on the bench database).

Timed: `settlement.services.run_create(period_end=now)` — claim every transaction (one
INSERT ... SELECT), aggregate the entries per account, counterparty and terms (one GROUP BY
joined to the terms through their validity range), price, net and total — and, separately,
its two SQL statements. It prints seconds and rows per second; the goal is <= 10 s.
With --repeat N the run is discarded (not timed) and made again N-1 more times.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/coalition_bench_settlement"
GOAL_SECONDS = 10.0
PARTNERS = 50
CHARITIES = 5


# --------------------------------------------------------------------------- the database


def _db_config(url: str) -> dict:
    import environ

    config = environ.Env.db_url_config(url)
    if "postgresql" not in config["ENGINE"]:
        sys.exit(f"bench.settlement needs PostgreSQL, not {config['ENGINE']} ({url})")
    if "bench" not in config["NAME"]:
        sys.exit(
            "bench.settlement drops and loads its database; it only runs on one whose name "
            f"contains 'bench' (got {config['NAME']!r}), e.g. {DEFAULT_URL}"
        )
    return config


def _admin_connection(config: dict):
    import psycopg2

    conn = psycopg2.connect(
        dbname="postgres",
        user=config.get("USER") or None,
        password=config.get("PASSWORD") or None,
        host=config.get("HOST") or None,
        port=config.get("PORT") or None,
    )
    conn.autocommit = True
    return conn


def recreate_database(config: dict) -> None:
    from psycopg2 import sql

    conn = _admin_connection(config)
    try:
        with conn.cursor() as cur:
            name = sql.Identifier(config["NAME"])
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            cur.execute(sql.SQL("CREATE DATABASE {}").format(name))
    finally:
        conn.close()


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "true")
    import django

    django.setup()


# --------------------------------------------------------------------------- loading


def _log(message: str) -> None:
    print(message, flush=True)


def load(transactions: int, members: int) -> dict:
    """The coalition and its ledger (not timed). Returns the ids the bench needs."""
    from datetime import timedelta
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.utils import timezone

    from charity.models import Charity
    from coalition.models import Account, Member
    from coalition.services import luhn_check_digit, programme_get, system_account_id
    from partners.models import CommercialTerms, Partner

    now = timezone.now().replace(microsecond=0)
    programme = programme_get()
    programme.currency = "USD"
    programme.save()
    started = time.perf_counter()
    partners = [
        Partner.objects.create(code=f"BENCH{n:02d}", name=f"Bench brand {n}", currency="USD")
        for n in range(PARTNERS)
    ]
    for n, partner in enumerate(partners):
        CommercialTerms.objects.create(
            partner=partner,
            valid_from=now - timedelta(days=90),
            issuance_price=Decimal("0.010000") + Decimal(n) / 1_000_000,
            redemption_price=Decimal("0.008000") + Decimal(n) / 2_000_000,
        )
        CommercialTerms.objects.create(
            partner=partner,
            valid_from=now - timedelta(days=15),
            issuance_price=Decimal("0.011000") + Decimal(n) / 1_000_000,
            redemption_price=Decimal("0.008500") + Decimal(n) / 3_000_000,
        )
    charities = [
        Charity.objects.create(
            name=f"Bench charity {n}",
            registration_number=f"BENCH-{n}",
            cause="environment",
            status=Charity.Status.VERIFIED,
        )
        for n in range(CHARITIES)
    ]
    issued = [system_account_id(Account.Kind.PARTNER_ISSUED, partner_id=p.pk) for p in partners]
    redeemed = [system_account_id(Account.Kind.PARTNER_REDEEMED, partner_id=p.pk) for p in partners]
    received = [
        system_account_id(Account.Kind.CHARITY_RECEIVED, charity_id=c.pk) for c in charities
    ]
    breakage = system_account_id(Account.Kind.BREAKAGE)
    prefix = "6337"
    with transaction.atomic():
        batch = []
        for n in range(members):
            body = f"{prefix}8{n:010d}"[-15:]
            batch.append(
                Member(
                    member_number=body + luhn_check_digit(body),
                    email=f"bench-{n}@bench.invalid",
                    display_name=f"Bench member {n}",
                )
            )
        created = Member.objects.bulk_create(batch, batch_size=5_000)
        Account.objects.bulk_create(
            [Account(kind=Account.Kind.MEMBER_WALLET, member=m) for m in created],
            batch_size=5_000,
        )
    member_ids = [m.pk for m in created]
    wallets = dict(Account.objects.filter(member_id__in=member_ids).values_list("member_id", "id"))
    _log(f"  partners, charities, {members:,} members: {time.perf_counter() - started:.1f} s")

    def array(values) -> str:
        return "ARRAY[" + ",".join(str(int(v)) for v in values) + "]::bigint[]"

    member_array = array(member_ids)
    wallet_array = array(wallets[m] for m in member_ids)
    params = {
        "n": transactions,
        "members": members,
        "start": now - timedelta(days=30),
        "span_seconds": 30 * 24 * 3600 - 60,
    }
    # The kind of transaction i is decided by i % 100 (see the module docstring); amounts by
    # a multiplicative hash of i. Reversals point back at the earn / burn of their block.
    shape = f"""
        SELECT i,
               CASE WHEN b < 45 THEN 'earn' WHEN b < 50 THEN 'bonus' WHEN b < 80 THEN 'burn'
                    WHEN b < 85 THEN 'donate' WHEN b < 88 THEN 'match'
                    WHEN b < 92 THEN 'expire' ELSE 'reversal' END AS kind,
               CASE WHEN b >= 92 AND b < 97 THEN i - 92 WHEN b >= 97 THEN i - 47 END
                   AS original,
               1 + mod(i, {PARTNERS}) AS p,
               1 + mod(i * 31, {PARTNERS}) AS q,
               1 + mod(i, {CHARITIES}) AS c,
               1 + mod(i * 7919, %(members)s) AS m,
               CASE WHEN b >= 92 THEN (50 + mod((i - CASE WHEN b < 97 THEN 92 ELSE 47 END)
                                                 * 104729, 950)) / 2
                    ELSE 50 + mod(i * 104729, 950) END AS pts
          FROM (SELECT i, mod(i, 100) AS b FROM generate_series(0::bigint, %(n)s - 1) AS i) s
    """
    partner_ids = array(p.pk for p in partners)
    charity_ids = array(c.pk for c in charities)
    issued_ids, redeemed_ids, received_ids = array(issued), array(redeemed), array(received)
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) + 1 FROM coalition_transaction")
        (base,) = cursor.fetchone()
        params["base"] = base
        for table in ("coalition_entry", "coalition_transaction"):
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        cursor.execute(
            f"""
            INSERT INTO coalition_transaction
                (id, kind, member_id, partner_id, charity_id, member_points, reference, caller,
                 idempotency_key, request_hash, purchase_currency, reversal_of_id, created_at,
                 metadata)
            SELECT %(base)s + i, kind,
                   CASE WHEN kind = 'match' THEN NULL ELSE ({member_array})[m] END,
                   CASE WHEN kind IN ('earn', 'bonus', 'match') THEN ({partner_ids})[p]
                        WHEN kind = 'burn' THEN ({partner_ids})[q]
                        WHEN kind = 'reversal' AND mod(original, 100) < 45 THEN
                            ({partner_ids})[1 + mod(original, {PARTNERS})]
                        WHEN kind = 'reversal' THEN
                            ({partner_ids})[1 + mod(original * 31, {PARTNERS})] END,
                   CASE WHEN kind IN ('donate', 'match') THEN ({charity_ids})[c] END,
                   CASE kind WHEN 'earn' THEN pts WHEN 'bonus' THEN pts WHEN 'match' THEN 0
                        WHEN 'reversal' THEN CASE WHEN mod(original, 100) < 45 THEN -pts
                                                  ELSE pts END
                        ELSE -pts END,
                   '', 'bench', NULL, '', '',
                   CASE WHEN kind = 'reversal' THEN %(base)s + original END,
                   %(start)s + make_interval(secs => (i::float8 / %(n)s) * %(span_seconds)s),
                   '{{}}'::jsonb
              FROM ({shape}) t
            """,
            params,
        )
        # Leg 1: the member's wallet (matches have none: the sponsor's issued account).
        # Leg 2: the counterparty account.
        cursor.execute(
            f"""
            INSERT INTO coalition_entry (transaction_id, account_id, points)
            SELECT %(base)s + i,
                   CASE WHEN kind = 'match' THEN ({issued_ids})[p] ELSE ({wallet_array})[m] END,
                   CASE kind WHEN 'earn' THEN pts WHEN 'bonus' THEN pts WHEN 'match' THEN -pts
                        WHEN 'reversal' THEN CASE WHEN mod(original, 100) < 45 THEN -pts
                                                  ELSE pts END
                        ELSE -pts END
              FROM ({shape}) t
            UNION ALL
            SELECT %(base)s + i,
                   CASE WHEN kind IN ('earn', 'bonus') THEN ({issued_ids})[p]
                        WHEN kind = 'burn' THEN ({redeemed_ids})[q]
                        WHEN kind IN ('donate', 'match') THEN ({received_ids})[c]
                        WHEN kind = 'expire' THEN {breakage}
                        WHEN mod(original, 100) < 45
                            THEN ({issued_ids})[1 + mod(original, {PARTNERS})]
                        ELSE ({redeemed_ids})[1 + mod(original * 31, {PARTNERS})] END,
                   CASE kind WHEN 'earn' THEN -pts WHEN 'bonus' THEN -pts WHEN 'match' THEN pts
                        WHEN 'reversal' THEN CASE WHEN mod(original, 100) < 45 THEN pts
                                                  ELSE -pts END
                        ELSE pts END
              FROM ({shape}) t
            """,
            params,
        )
        cursor.execute(
            """
            UPDATE coalition_account a SET balance = s.total
              FROM (SELECT account_id, sum(points) AS total FROM coalition_entry
                     GROUP BY account_id) s
             WHERE a.id = s.account_id AND a.kind = 'member_wallet'
            """
        )
        # Each wallet's positive balance in one lot (expiring in a year), as the services keep.
        cursor.execute(
            """
            INSERT INTO coalition_lot (member_id, transaction_id, points, remaining, expires_at,
                                       created_at)
            SELECT a.member_id, first.id, a.balance, a.balance, now() + interval '1 year', now()
              FROM coalition_account a
              JOIN (SELECT member_id, min(id) AS id FROM coalition_transaction
                     WHERE member_id IS NOT NULL GROUP BY member_id) first
                ON first.member_id = a.member_id
             WHERE a.kind = 'member_wallet' AND a.balance > 0
            """
        )
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # run the deferred foreign key checks
        for table in ("coalition_entry", "coalition_transaction"):
            cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('coalition_transaction', 'id'), "
            "(SELECT max(id) FROM coalition_transaction))"
        )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        cursor.execute("SELECT count(*) FROM coalition_entry")
        (entries,) = cursor.fetchone()
    _log(
        f"  {transactions:,} transactions and {entries:,} entries loaded in "
        f"{time.perf_counter() - started:.1f} s"
    )
    from api.management.commands.create_staff_token import finance_group

    user_model = get_user_model()
    staff, _ = user_model.objects.get_or_create(
        username="bench-finance", defaults={"is_staff": True}
    )
    staff.groups.add(finance_group())  # creating runs needs api.manage_settlement
    staff = user_model.objects.get(pk=staff.pk)  # permissions are cached per object
    return {"staff": staff, "now": now}


# --------------------------------------------------------------------------- the bench


def time_run(staff, period_end, explain: bool) -> tuple[float, object]:
    from django.db import connection, transaction

    from settlement.services import computation

    statements: dict[str, float] = {}
    original_claim = computation.claim_transactions
    original_aggregate = computation.aggregate_claims

    def timed(name, fn):
        def wrapper(**kwargs):
            started = time.perf_counter()
            try:
                return fn(**kwargs)
            finally:
                statements[name] = time.perf_counter() - started

        return wrapper

    computation.claim_transactions = timed("claim (INSERT ... SELECT)", original_claim)
    computation.aggregate_claims = timed(
        "aggregate (GROUP BY over terms ranges)", original_aggregate
    )
    try:
        from settlement.services import run_create

        started = time.perf_counter()
        run = run_create(period_end=period_end, created_by=staff)
        elapsed = time.perf_counter() - started
    finally:
        computation.claim_transactions = original_claim
        computation.aggregate_claims = original_aggregate
    for name, seconds in statements.items():
        _log(f"    {name:<42} {seconds:6.2f} s")
    if explain:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT min(transaction_id), max(transaction_id) FROM settlement_claim "
                "WHERE run_id = %s",
                [run.pk],
            )
            lo, hi = cursor.fetchone()
            cursor.execute(
                "EXPLAIN (ANALYZE, BUFFERS) "
                + computation._aggregate_sql(computation._donation_table()),
                {"run": run.pk, "lo": lo, "hi": hi},
            )
            _log("\n".join(row[0] for row in cursor.fetchall()))
    return elapsed, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--reuse", action="store_true", help="keep an already loaded database")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE the aggregate")
    args = parser.parse_args(argv)

    url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    if "bench" not in url:
        url = DEFAULT_URL
    config = _db_config(url)
    _log(f"bench.settlement on {config['HOST'] or 'localhost'}/{config['NAME']}")
    if not args.reuse:
        recreate_database(config)
    setup_django(url)
    from django.core.management import call_command
    from django.utils import timezone

    call_command("migrate", verbosity=0)
    from coalition.models import LedgerTransaction
    from settlement.models import SettlementRun
    from settlement.services import run_discard

    if args.reuse and LedgerTransaction.objects.exists():
        from django.contrib.auth import get_user_model

        staff = get_user_model().objects.get(username="bench-finance")
        for run in SettlementRun.objects.filter(status="draft"):
            run_discard(run=run, discarded_by=staff)
        count = LedgerTransaction.objects.count()
    else:
        _log("loading (not timed):")
        staff = load(args.transactions, args.members)["staff"]
        count = args.transactions
    period_end = timezone.now()
    timings = []
    for attempt in range(args.repeat):
        if attempt:
            run_discard(run=run, discarded_by=staff)  # noqa: F821 - set by the previous pass
        _log(f"run {attempt + 1}:")
        elapsed, run = time_run(staff, period_end, args.explain and attempt == 0)
        timings.append(elapsed)
        _log(
            f"  run_create: {elapsed:.2f} s for {run.claimed_transactions:,} transactions "
            f"({run.claimed_transactions / elapsed:,.0f} transactions/s), "
            f"{run.lines.count()} lines, paid out {run.total_paid_out}, collected "
            f"{run.total_collected}, operator revenue {run.operator_revenue}"
        )
    best = min(timings)
    _log(
        f"settlement run over {count:,} transactions: best {best:.2f} s "
        f"({count / best:,.0f} rows/s); goal <= {GOAL_SECONDS:.0f} s: "
        f"{'met' if best <= GOAL_SECONDS else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
