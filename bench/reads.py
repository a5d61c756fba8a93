"""Read latency of the two hottest member reads, on PostgreSQL, with plain psycopg2.

    .venv/bin/python -m bench.reads [--url postgres://postgres@127.0.0.1:5432/coalition_bench_volume]
                                    [--members 2000] [--seed 1] [--orm] [--cold]

Picks N random members that have a wallet and, for each (one connection, autocommit, each
query sent once per member, in random order), times:

  balance  SELECT balance, held FROM coalition_account
           WHERE member_id = %s AND kind = 'member_wallet'
  history  the first page of the member's history: SELECT … FROM coalition_transaction
           WHERE member_id = %s ORDER BY created_at DESC, id DESC LIMIT 20
           (the txn_member_history index)

and prints p50 / p99 / max in milliseconds, client-side (query sent to rows fetched). Unless
--cold, one untimed pass over the same members comes first (the peer's reads run after
warm-up calls too); --cold times each member's first read, pages fetched from disk included.

With --orm it also times, per member, the Python path the API takes (Django set up on the
same database, no GraphQL): `selectors.member_balance` (the wallet by member id, as the
ORM sends it), the history's first page as `resolve_transactions` builds it
(`member_transactions_visible` for the member as viewer, `keyset_page` with the API's
HISTORY_ORDER and first=20: 21 rows fetched and turned into models), and the second page
from the first page's cursor (the keyset `(created_at, id) < (…)` filter).

It reads only; run it on a generate_volume database. It asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/coalition_bench_volume"

BALANCE = (
    "SELECT balance, held FROM coalition_account WHERE member_id = %s AND kind = 'member_wallet'"
)
HISTORY = (
    "SELECT id, kind, member_points, partner_id, charity_id, reference, created_at "
    "FROM coalition_transaction WHERE member_id = %s "
    "ORDER BY created_at DESC, id DESC LIMIT 20"
)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> None:
    import psycopg2

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--orm", action="store_true", help="also time the selectors + keyset page the API uses"
    )
    parser.add_argument(
        "--cold", action="store_true", help="no untimed warm-up pass over the members first"
    )
    args = parser.parse_args(argv)

    conn = psycopg2.connect(args.url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT min(member_id), max(member_id) FROM coalition_account")
    low, high = cur.fetchone()
    rng = random.Random(args.seed)
    members: set[int] = set()
    while len(members) < args.members:
        members.update(rng.randint(low, high) for _ in range(args.members))
    cur.execute(
        "SELECT member_id FROM coalition_account WHERE kind = 'member_wallet' "
        "AND member_id = ANY(%s)",
        [list(members)],
    )
    picked = [row[0] for row in cur.fetchall()][: args.members]
    rng.shuffle(picked)

    if not args.cold:
        # One untimed pass first, as bench.peer_hordak's reads run after warm-up calls: the
        # timed pass then measures the query, not the first read of each page from disk.
        for member_id in picked:
            for sql in (BALANCE, HISTORY):
                cur.execute(sql, [member_id])
                cur.fetchall()
    timings: dict[str, list[float]] = {"balance": [], "history": []}
    for member_id in picked:
        for name, sql in (("balance", BALANCE), ("history", HISTORY)):
            started = time.perf_counter()
            cur.execute(sql, [member_id])
            cur.fetchall()
            timings[name].append((time.perf_counter() - started) * 1000)

    if args.orm:
        timings.update(_orm_timings(args.url, picked))

    cur.execute("SELECT count(*) FROM coalition_transaction")
    (transactions,) = cur.fetchone()
    print(f"bench.reads: {len(picked)} random members, {transactions:,} transactions in the db")
    for name, values in timings.items():
        print(
            f"  {name:14s} p50 {statistics.median(values):6.3f} ms  "
            f"p99 {_pct(values, 0.99):6.3f} ms  max {max(values):6.3f} ms"
        )
    conn.close()


def _orm_timings(url: str, picked: list[int]) -> dict[str, list[float]]:
    """The ORM path of the API for the same members (Django on the same database)."""
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    os.environ.setdefault("DEBUG", "false")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.db import connection

    from api.coalition.types import HISTORY_ORDER
    from api.core.connections import keyset_page
    from coalition.models import Member
    from coalition.selectors import Viewer, member_balance, member_transactions_visible

    connection.ensure_connection()
    timings: dict[str, list[float]] = {"orm balance": [], "orm history": [], "orm page 2": []}
    for member_id in picked:
        member = Member(pk=member_id)
        started = time.perf_counter()
        member_balance(member=member)
        timings["orm balance"].append((time.perf_counter() - started) * 1000)

        history = member_transactions_visible(member=member, viewer=Viewer(member_id=member_id))
        started = time.perf_counter()
        page = keyset_page(history, ordering=HISTORY_ORDER, first=20, after=None)
        timings["orm history"].append((time.perf_counter() - started) * 1000)
        if page.has_next_page:
            started = time.perf_counter()
            keyset_page(history, ordering=HISTORY_ORDER, first=20, after=page.cursors[-1])
            timings["orm page 2"].append((time.perf_counter() - started) * 1000)
    if not timings["orm page 2"]:
        del timings["orm page 2"]
    connection.close()
    return timings


if __name__ == "__main__":
    main()
