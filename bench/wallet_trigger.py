"""Row-level against statement-level wallet posting, interleaved on one PostgreSQL database.

    .venv/bin/python -m bench.wallet_trigger [--url postgres://postgres@127.0.0.1:5432/coalition_bench]
                                             [--rounds 4] [--singles 300] [--batches 5]

Needs a migrated bench database with member wallets and a partner (`bench.ledger` prepares
one; the name must contain "bench"). It swaps the trigger `coalition_entry_posts_to_wallet`
between the row-level function of postgresql_ledger_rules.sql and the statement-level one of
postgresql_statement_wallet.sql (DDL in its own transaction), alternating which goes first
each round, and times at the raw SQL level:

  single  lock one wallet, INSERT a transaction, INSERT its two entries (one statement), COMMIT
  batch   lock 1,000 wallets in member-id order, one INSERT of 1,000 transactions, one
          INSERT of their 2,000 entries, COMMIT

It leaves the statement-level trigger in place (the state migration 0005 gives), writes
balanced earns (the ledger stays consistent) and asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/coalition_bench"
DROP = "DROP TRIGGER IF EXISTS coalition_entry_posts_to_wallet ON coalition_entry;"
TRIGGERS = {
    "row": DROP + " CREATE TRIGGER coalition_entry_posts_to_wallet AFTER INSERT ON "
    "coalition_entry FOR EACH ROW EXECUTE FUNCTION coalition_post_to_wallet();",
    "statement": DROP + " CREATE TRIGGER coalition_entry_posts_to_wallet AFTER INSERT ON "
    "coalition_entry REFERENCING NEW TABLE AS new_entries FOR EACH STATEMENT "
    "EXECUTE FUNCTION coalition_post_to_wallet_statement();",
}
COLUMNS = (
    "kind, member_id, partner_id, member_points, reference, caller, idempotency_key, "
    "request_hash, purchase_currency, created_at, metadata"
)
TXN_ROW = "('earn', %s, %s, 10, '', 'bench:wallet_trigger', %s, 'h', '', now(), '{}')"


def main(argv: list[str] | None = None) -> None:
    import psycopg2

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--singles", type=int, default=300)
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args(argv)
    if "bench" not in args.url.rsplit("/", 1)[-1]:
        raise SystemExit("bench.wallet_trigger swaps triggers: use a database named like *bench*")

    conn = psycopg2.connect(args.url)
    cur = conn.cursor()
    cur.execute(
        "SELECT id, member_id FROM coalition_account WHERE kind = 'member_wallet' "
        "ORDER BY member_id LIMIT 2000"
    )
    wallets = cur.fetchall()
    cur.execute(
        "SELECT id, partner_id FROM coalition_account "
        "WHERE kind = 'partner_issued' AND partner_id IS NOT NULL LIMIT 1"
    )
    issued, partner = cur.fetchone()
    conn.commit()
    if len(wallets) < 1000:
        raise SystemExit("needs at least 1,000 member wallets (run bench.ledger first)")
    tag = f"wt-{time.time_ns()}"
    counter = iter(range(10**12))

    def key() -> str:
        return f"{tag}-{next(counter)}"

    def single(wallet_id: int, member_id: int) -> None:
        cur.execute("SELECT id FROM coalition_account WHERE id = %s FOR UPDATE", [wallet_id])
        cur.execute(
            f"INSERT INTO coalition_transaction ({COLUMNS}) VALUES {TXN_ROW} RETURNING id",
            [member_id, partner, key()],
        )
        txn = cur.fetchone()[0]
        cur.execute(
            "INSERT INTO coalition_entry (transaction_id, account_id, points) "
            "VALUES (%s, %s, -10), (%s, %s, 10)",
            [txn, issued, txn, wallet_id],
        )
        conn.commit()

    def batch(chosen: list[tuple[int, int]]) -> None:
        chosen = sorted(chosen, key=lambda wallet: wallet[1])
        cur.execute(
            "SELECT id FROM coalition_account WHERE id = ANY(%s) ORDER BY member_id FOR UPDATE",
            [[wallet_id for wallet_id, _ in chosen]],
        )
        rows = ",".join(
            cur.mogrify(TXN_ROW, [member_id, partner, key()]).decode() for _, member_id in chosen
        )
        cur.execute(f"INSERT INTO coalition_transaction ({COLUMNS}) VALUES {rows} RETURNING id")
        ids = [row[0] for row in cur.fetchall()]
        entries = ",".join(
            cur.mogrify("(%s, %s, -10), (%s, %s, 10)", [txn, issued, txn, wallet_id]).decode()
            for txn, (wallet_id, _) in zip(ids, chosen, strict=True)
        )
        cur.execute(
            f"INSERT INTO coalition_entry (transaction_id, account_id, points) VALUES {entries}"
        )
        conn.commit()

    rates: dict[str, dict[str, list[float]]] = {
        mode: {"single": [], "batch": []} for mode in TRIGGERS
    }
    rng = random.Random(1)
    try:
        for round_no in range(args.rounds):
            order = ["row", "statement"] if round_no % 2 == 0 else ["statement", "row"]
            for mode in order:
                cur.execute(TRIGGERS[mode])
                conn.commit()
                started = time.perf_counter()
                for _ in range(args.singles):
                    single(*rng.choice(wallets))
                rates[mode]["single"].append(args.singles / (time.perf_counter() - started))
                if args.batches:
                    started = time.perf_counter()
                    for _ in range(args.batches):
                        batch(rng.sample(wallets, 1000))
                    elapsed = time.perf_counter() - started
                    rates[mode]["batch"].append(args.batches * 1000 / elapsed)
    finally:
        conn.rollback()
        cur.execute(TRIGGERS["statement"])
        conn.commit()
        conn.close()

    for mode, measured in rates.items():
        for workload, values in measured.items():
            if values:
                print(
                    f"{mode:9s} {workload:6s} median {statistics.median(values):8,.0f} txn/s  "
                    f"mean {statistics.mean(values):8,.0f}  rounds {[round(v) for v in values]}"
                )


if __name__ == "__main__":
    main()
