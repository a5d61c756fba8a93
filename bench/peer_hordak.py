"""The peer of `python -m bench`: django-hordak doing the same ledger work, on PostgreSQL.

    .venv/bin/python -m bench.peer_hordak [--seconds N] [--members N] [--rows N]

Needs django-hordak (the `bench` extras). It runs in a process of its own, with minimal
Django settings built in code (settings.configure): hordak's apps only, its own database
(default postgres://postgres@127.0.0.1:5432/coalition_bench_hordak, DATABASE_URL may name
another whose name contains "bench"), created if missing and migrated, so hordak's own
PostgreSQL triggers (legs balance per transaction, one currency per account) fire.

Preparation (not timed): one partner account, one redemption account, M member accounts
(hordak Account rows, MPTT roots, currency EUR; points are counted as EUR 1.00 each).

Workloads, each for --seconds after 50 warm-up calls, members round-robin, each call in its
own `transaction.atomic()`:

  earn1  `partner.transfer_to(member, Money(100))`: one hordak Transaction and two Legs.
  earn2  the same in two processes on disjoint halves of the members.
  burn   `member.transfer_to(redemption, Money(100))` (hordak checks no balance and keeps
         no lots: the burn is a plain transfer).
  batch  a file's worth of earns (--rows, chunks of 1000): per chunk one atomic block,
         Transaction.objects.bulk_create and Leg.objects.bulk_create (the fastest path hordak
         allows; hordak has no import pipeline, no validation, no idempotency).
  expiry  (only with --expiry-lots N) the equivalent of Coalition's expiry sweep: N member
         accounts (made in one INSERT … SELECT, not timed: MPTT roots, as hordak would make
         them one by one) each moved 100 to a breakage account, in chunks of --expiry-chunk
         accounts: per chunk one atomic block, Transaction.objects.bulk_create and
         Leg.objects.bulk_create (hordak's fastest path; its deferred balance trigger fires).
         What hordak does not do: it keeps no lots, so it decides nothing about what is due
         (the amounts are given), locks no account and checks no balance or hold.
  balance  `Account.objects.get(pk=…).get_balance()`, the documented balance read (after an
         ANALYZE of hordak's tables, which grew during the writes).
  history  the member's last 20 legs with their transactions, newest first (ORM).
  balance_sql, history_sql  the same two reads in plain SQL on hordak's tables (a SUM over
         the account's legs; the last 20 legs joined to their transactions), through the
         same connection: comparable with bench.reads, which reads Coalition in plain SQL.

`--only expiry` runs the expiry workload alone (what `python -m bench` does for its expiry
row). Prints a table and, last, one line `RESULT {json}` that `python -m bench` parses.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/coalition_bench_hordak"
WARMUP = 50
POINTS = 100
CHUNK = 1000
SQL = {
    "balance_sql": "SELECT COALESCE(SUM(debit), 0) - COALESCE(SUM(credit), 0) "
    "FROM hordak_leg WHERE account_id = %s",
    "history_sql": "SELECT l.id, l.debit, l.credit, t.id, t.date, t.description "
    "FROM hordak_leg l JOIN hordak_transaction t ON t.id = l.transaction_id "
    "WHERE l.account_id = %s ORDER BY t.date DESC, l.id DESC LIMIT 20",
}


def _db_config(url: str) -> dict:
    import environ

    config = environ.Env.db_url_config(url)
    if "postgresql" not in config["ENGINE"]:
        sys.exit(f"bench.peer_hordak needs PostgreSQL, not {config['ENGINE']}")
    if "bench" not in config["NAME"]:
        sys.exit(f"bench.peer_hordak only runs on a database named *bench* (got {config['NAME']})")
    return config


def ensure_database(config: dict) -> None:
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(
        dbname="postgres",
        user=config["USER"],
        password=config["PASSWORD"],
        host=config["HOST"],
        port=config["PORT"] or 5432,
    )
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]])
        if cur.fetchone() is None:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(config["NAME"])))
    conn.close()


def setup_django(config: dict) -> None:
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-peer-hordak",
        USE_TZ=True,
        DATABASES={"default": {**config, "CONN_MAX_AGE": None}},
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "mptt",
            "djmoney",
            "hordak",
        ],
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        DEFAULT_CURRENCY="EUR",
        CURRENCIES=["EUR"],
        HORDAK_CURRENCIES=["EUR"],
        LOGGING_CONFIG=None,
    )
    django.setup()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def prepare(members: int) -> dict:
    from hordak.models import Account, AccountType

    def account(name: str, kind: str) -> int:
        return Account.objects.create(name=name, type=kind, currencies=["EUR"]).pk

    run = f"{os.getpid()}-{int(time.time())}"
    partner = account(f"partner {run}", AccountType.asset)
    redemption = account(f"redemption {run}", AccountType.asset)
    wallet_ids = [account(f"member {run} {n}", AccountType.asset) for n in range(members)]
    return {"partner": partner, "redemption": redemption, "members": wallet_ids}


def _loop(kind: str, fixture: dict, members: list[int], seconds: float) -> list[float]:
    from django.db import connection, transaction
    from djmoney.money import Money
    from hordak.models import Account, Leg

    accounts = {a.pk: a for a in Account.objects.filter(pk__in=members)}
    partner = Account.objects.get(pk=fixture["partner"])
    redemption = Account.objects.get(pk=fixture["redemption"])
    amount = Money(POINTS, "EUR")

    def one(member_id: int) -> None:
        if kind == "earn":
            with transaction.atomic():
                partner.transfer_to(accounts[member_id], amount, description="earn")
        elif kind == "burn":
            with transaction.atomic():
                accounts[member_id].transfer_to(redemption, amount, description="burn")
        elif kind == "balance":
            Account.objects.get(pk=member_id).get_balance()
        elif kind == "history":
            list(
                Leg.objects.filter(account_id=member_id)
                .select_related("transaction")
                .order_by("-transaction__date", "-id")[:20]
            )
        elif kind in SQL:
            with connection.cursor() as cur:
                cur.execute(SQL[kind], [member_id])
                cur.fetchall()

    n = 0
    for _ in range(WARMUP):
        one(members[n % len(members)])
        n += 1
    timings: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        started = time.perf_counter()
        one(members[n % len(members)])
        timings.append(time.perf_counter() - started)
        n += 1
    return timings


def _child(kind, fixture, members, seconds, queue) -> None:
    from django.db import connections

    connections.close_all()
    started = time.perf_counter()
    timings = _loop(kind, fixture, members, seconds)
    queue.put((timings, time.perf_counter() - started))


def run(kind: str, fixture: dict, seconds: float, procs: int) -> dict:
    from django.db import connections

    if procs == 1:
        timings = _loop(kind, fixture, fixture["members"], seconds)
        rate = len(timings) / sum(timings)
    else:
        connections.close_all()
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        halves = [fixture["members"][i::procs] for i in range(procs)]
        workers = [
            ctx.Process(target=_child, args=(kind, fixture, half, seconds, queue))
            for half in halves
        ]
        for w in workers:
            w.start()
        parts = [queue.get() for _ in workers]
        for w in workers:
            w.join()
        timings = [t for part, _ in parts for t in part]
        rate = sum(len(part) / sum(part) for part, _ in parts)
    return {
        "n": len(timings),
        "rate": rate,
        "p50": statistics.median(timings) * 1000,
        "p99": _pct(timings, 0.99) * 1000,
    }


def batch(fixture: dict, rows: int) -> dict:
    from django.db import transaction
    from djmoney.money import Money
    from hordak.models import Leg, Transaction

    members = fixture["members"]
    amount = Money(POINTS, "EUR")
    started = time.perf_counter()
    done = 0
    while done < rows:
        size = min(CHUNK, rows - done)
        with transaction.atomic():
            txns = Transaction.objects.bulk_create(
                [Transaction(description=f"batch {done + i}") for i in range(size)]
            )
            legs = []
            for i, txn in enumerate(txns):
                legs.append(Leg(transaction=txn, account_id=fixture["partner"], credit=amount))
                legs.append(
                    Leg(
                        transaction=txn, account_id=members[(done + i) % len(members)], debit=amount
                    )
                )
            Leg.objects.bulk_create(legs)
        done += size
    elapsed = time.perf_counter() - started
    return {"n": rows, "rate": rows / elapsed, "seconds": elapsed}


def expiry(lots: int, chunk: int) -> dict:
    """N member accounts each move 100 to breakage, `chunk` transfers per atomic block."""
    from django.db import connection, transaction
    from djmoney.money import Money
    from hordak.models import Account, AccountType, Leg, Transaction

    run = f"{os.getpid()}-{int(time.time())}"
    breakage = Account.objects.create(
        name=f"breakage {run}", type=AccountType.income, currencies=["EUR"]
    ).pk
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cur:
        # MPTT roots, each its own tree, as Account.objects.create() makes them.
        cur.execute(
            """
            INSERT INTO hordak_account (uuid, name, parent_id, code, full_code, type,
                                        is_bank_account, currencies, lft, rght, tree_id, level)
            SELECT gen_random_uuid(), %s || ' ' || i, NULL, NULL, NULL, %s, false,
                   '["EUR"]'::jsonb, 1, 2, base.t + i, 0
              FROM (SELECT coalesce(max(tree_id), 0) AS t FROM hordak_account) base,
                   generate_series(1, %s) AS i
            RETURNING id
            """,
            [f"expiring member {run}", AccountType.asset, lots],
        )
        members = sorted(row[0] for row in cur.fetchall())
    print(f"  {lots:,} hordak accounts made in {time.perf_counter() - started:.1f} s", flush=True)
    amount = Money(POINTS, "EUR")
    started = time.perf_counter()
    for offset in range(0, lots, chunk):
        part = members[offset : offset + chunk]
        with transaction.atomic():
            txns = Transaction.objects.bulk_create(
                [Transaction(description="expire") for _ in part]
            )
            legs = []
            for account_id, txn in zip(part, txns, strict=True):
                legs.append(Leg(transaction=txn, account_id=account_id, credit=amount))
                legs.append(Leg(transaction=txn, account_id=breakage, debit=amount))
            Leg.objects.bulk_create(legs)
    elapsed = time.perf_counter() - started
    return {"n": lots, "rate": lots / elapsed, "seconds": elapsed, "chunk": chunk}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peer_hordak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per workload (5)")
    parser.add_argument("--members", type=int, default=500, help="member accounts (500)")
    parser.add_argument("--rows", type=int, default=10_000, help="batch rows (10000)")
    parser.add_argument(
        "--expiry-lots", type=int, default=0, help="expiry workload: accounts (0: skip it)"
    )
    parser.add_argument("--expiry-chunk", type=int, default=CHUNK, help="transfers per block")
    parser.add_argument("--only", choices=["expiry"], help="run this workload alone")
    args = parser.parse_args(argv)

    config = _db_config(os.environ.get("DATABASE_URL", DEFAULT_URL))
    ensure_database(config)
    setup_django(config)
    from importlib.metadata import version

    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    print(f"hordak {version('django-hordak')} on {config['NAME']}: preparing ...", flush=True)
    results: dict[str, dict] = {}
    if args.only == "expiry":
        results["expiry"] = expiry(args.expiry_lots or 100_000, args.expiry_chunk)
        _report(results)
        return
    fixture = prepare(args.members)
    for label, kind, procs in (
        ("earn1", "earn", 1),
        ("earn2", "earn", 2),
        ("burn", "burn", 1),
        ("balance", "balance", 1),
        ("history", "history", 1),
        ("balance_sql", "balance_sql", 1),
        ("history_sql", "history_sql", 1),
    ):
        if kind == "balance":
            # Fresh statistics before the reads: the tables grew during the writes, and with
            # stale ones PostgreSQL hash-joins the whole transaction table for a history page.
            from django.db import connection

            with connection.cursor() as cur:
                cur.execute("ANALYZE hordak_leg, hordak_transaction")
        results[label] = run(kind, fixture, args.seconds, procs)
    results["batch"] = batch(fixture, args.rows)
    if args.expiry_lots:
        results["expiry"] = expiry(args.expiry_lots, args.expiry_chunk)
    _report(results)


def _report(results: dict) -> None:
    from importlib.metadata import version

    print(f"{'workload':10}{'n':>8}{'per s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for label, r in results.items():
        print(
            f"{label:10}{r['n']:>8}{r['rate']:>10.0f}"
            f"{r.get('p50', float('nan')):>9.2f}{r.get('p99', float('nan')):>9.2f}"
        )
    print("RESULT " + json.dumps({"version": version("django-hordak"), **results}), flush=True)


if __name__ == "__main__":
    main()
