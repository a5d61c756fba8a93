"""One benchmark, side by side (issue 8): every workload, its raw-SQL floor and its peer.

    .venv/bin/python -m bench [--runs 3 | --quick] [--seconds 5] [--output BENCHMARKS.md]

Runs the existing benches as subprocesses with short durations, parses the figures they
print, and writes BENCHMARKS.md: for each workload the median over the runs of Coalition's
figure, of the raw-SQL floor measured in the same run (psycopg2, the same rows), and of the
peer, django-hordak (`python -m bench.peer_hordak`, its own process, settings and database),
with the ratios. It also records the machine: CPUs, load averages, PostgreSQL version.

Each bench gets its own database (coalition_bench_side_*; settlement's is dropped and loaded
again). PostgreSQL at postgres://postgres@127.0.0.1:5432 unless BENCH_PG_URL says otherwise
(a URL without the database name). On a 2-core machine a default run (3 runs of 5 s per
timed workload, settlement over 1,000,000 transactions) takes about 7 minutes; --quick (1 run)
about 3; the expiry row (--expiry-lots, 100,000 by default, run once) adds about 2 to 3.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

PG = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
ROOT = Path(__file__).resolve().parent.parent
EARN_GOAL = 0.35
IMPORT_GOAL = 10_000
NUMBER = r"([\d,]+(?:\.\d+)?)"


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def _run(
    module: str, args: list[str], db: str | None, timeout: float, log
) -> tuple[str, float] | None:
    env = dict(os.environ)
    if db:
        env["DATABASE_URL"] = f"{PG}/{db}"
    command = [sys.executable, "-m", module, *args]
    log(f"  $ {' '.join(command[1:])}" + (f"  [{db}]" if db else ""))
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        log(f"    timed out after {timeout:.0f} s")
        return None
    elapsed = time.perf_counter() - started
    output = done.stdout + "\n" + done.stderr
    if done.returncode != 0:
        log(f"    exit {done.returncode} after {elapsed:.0f} s: {output.strip()[-600:]}")
        if not output.strip():
            return None
    return output, elapsed


# ------------------------------------------------------------------------ the parsers


def parse_ledger(text: str) -> dict:
    out = {}
    row = re.compile(r"^\((\w+)\)\s+.+?\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s*$")
    for line in text.splitlines():
        match = row.match(line)
        if match:
            label, _, _, rate, p50, p99 = match.groups()
            out[label] = {"rate": float(rate), "p50": float(p50), "p99": float(p99)}
    return out


def parse_reads(text: str) -> dict:
    out = {}
    for name in ("balance", "history"):
        match = re.search(rf"{name}\s+p50\s+{NUMBER} ms\s+p99\s+{NUMBER} ms", text)
        if match:
            out[name] = {"p50": _num(match[1]), "p99": _num(match[2])}
    return out


def parse_batch(text: str) -> dict:
    out = {}
    for label in ("a", "c", "e", "f"):
        match = re.search(rf"^\({label}\) .*?{NUMBER} purchases/s", text, re.M)
        if match:
            out[label] = {"rate": _num(match[1])}
    return out


def parse_settlement(text: str) -> list[dict]:
    return [
        {"seconds": _num(m[1]), "transactions": _num(m[2]), "rate": _num(m[3])}
        for m in re.finditer(
            rf"run_create: {NUMBER} s for {NUMBER} transactions \({NUMBER} transactions/s\)",
            text,
        )
    ]


def parse_expiry(text: str) -> dict:
    out: dict = {}
    match = re.search(
        rf"^\(a\) points_expire_due: {NUMBER} s for {NUMBER} lots \({NUMBER} lots/s\)", text, re.M
    )
    if match:
        out["seconds"], out["lots"], out["rate"] = map(_num, match.groups())
    match = re.search(
        rf"burns during the sweep: n {NUMBER}, p50 {NUMBER} ms, p99 {NUMBER} ms, max {NUMBER} ms",
        text,
    )
    if match:
        out["burn_p50"], out["burn_p99"], out["burn_max"] = map(_num, match.groups()[1:])
    match = re.search(rf"burns alone \(baseline\): n {NUMBER}, p50 {NUMBER} ms", text)
    if match:
        out["burn_alone_p50"] = _num(match[2])
    match = re.search(
        rf"chunk transactions \(wallets locked\): n {NUMBER}, p50 {NUMBER} ms, "
        rf"p99 {NUMBER} ms, max {NUMBER} ms",
        text,
    )
    if match:
        out["chunk_p50"], out["chunk_p99"], out["chunk_max"] = map(_num, match.groups()[1:])
    match = re.search(r"burns during the sweep: .*; ([\d,]+) waited > 100 ms for a lock", text)
    if match:
        out["burns_over_100"] = _num(match[1])
    match = re.search(
        rf"^\(b\) raw-SQL floor: {NUMBER} s for {NUMBER} lots \({NUMBER} lots/s\)", text, re.M
    )
    if match:
        out["floor_seconds"], _, out["floor_rate"] = map(_num, match.groups())
    return out


def parse_api(text: str) -> dict:
    out = {}
    cols = r"\s+" + r"\s+".join([NUMBER] * 5)
    match = re.search(r"^\(1b\) closed, purchases only[^\n]*?#\d+" + cols, text, re.M)
    if match:
        out["api"] = {"rate": _num(match[2]), "p50": _num(match[3]), "p99": _num(match[5])}
    match = re.search(r"^\(2\) purchase_record, 2 processes #\d+" + cols, text, re.M)
    if match:
        out["services"] = {"rate": _num(match[2]), "p50": _num(match[3]), "p99": _num(match[5])}
    return out


def parse_peer(text: str) -> dict:
    import json

    for line in text.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {}


# ------------------------------------------------------------------------ the machine


def pg_version() -> str:
    import psycopg2

    try:
        conn = psycopg2.connect(f"{PG}/postgres")
    except psycopg2.Error as exc:
        return f"unknown ({exc.__class__.__name__})"
    with conn.cursor() as cur:
        cur.execute("SHOW server_version")
        version = cur.fetchone()[0]
        cur.execute("SHOW synchronous_commit")
        sync = cur.fetchone()[0]
    conn.close()
    return f"{version} (synchronous_commit={sync})"


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


# ------------------------------------------------------------------------ the report


def med(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def pick(runs: list[dict], *path: str) -> float | None:
    """The median over the runs of runs[i][path[0]][path[1]]..., skipping missing ones."""
    values = []
    for run in runs:
        value = run
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        values.append(value)
    return med(values)


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}{unit}"
    return f"{value:.2f}{unit}"


def ratio(x: float | None, y: float | None) -> str:
    return "—" if x is None or y is None or y == 0 else f"{x / y:.2f}"


def verdict(x: float | None, peer: float | None, higher_is_better: bool = True) -> str:
    if x is None or peer is None:
        return "no peer figure"
    ahead = x > peer if higher_is_better else x < peer
    return "ahead of hordak" if ahead else "**behind hordak**"


def render(runs: list[dict], settlement: list[dict], meta: dict, expiry: dict | None = None) -> str:
    rows = []

    def rate_row(name, coalition, floor, peer, note=""):
        rows.append(
            f"| {name} | {fmt(coalition)} | {fmt(floor)} | {ratio(coalition, floor)} | "
            f"{fmt(peer)} | {ratio(coalition, peer)} | {note or verdict(coalition, peer)} |"
        )

    earn1 = pick(runs, "ledger", "b1", "rate")
    floor1 = pick(runs, "ledger", "a", "rate")
    rate_row("single earn, 1 process (tx/s)", earn1, floor1, pick(runs, "peer", "earn1", "rate"))
    rate_row(
        "single earn, 2 processes (tx/s)",
        pick(runs, "ledger", "b2", "rate"),
        pick(runs, "ledger", "a2", "rate"),
        pick(runs, "peer", "earn2", "rate"),
    )
    burn = pick(runs, "ledger", "c1", "rate")
    peer_burn = pick(runs, "peer", "burn", "rate")
    rate_row(
        "burn, 1 process (tx/s)",
        burn,
        pick(runs, "ledger", "c2", "rate"),
        peer_burn,
        verdict(burn, peer_burn) + " (hordak's burn is a bare transfer: no balance check, no lots)",
    )
    batch = pick(runs, "batch", "a", "rate")
    peer_batch = pick(runs, "peer", "batch", "rate")
    rate_row(
        "batch accrual (purchases/s)",
        batch,
        pick(runs, "batch", "c", "rate"),
        peer_batch,
        verdict(batch, peer_batch) + " (hordak: bulk_create of transactions and legs per chunk, "
        "no CSV, validation, rules or idempotency)",
    )
    celery_import = pick(runs, "batch", "e", "rate")
    floor_parallel = pick(runs, "batch", "f", "rate")
    rate_row(
        "file import through Celery, 2 worker processes (purchases/s)",
        celery_import,
        floor_parallel,
        None,
        "`manage.py import_purchases` to a Celery worker of 2 processes on Redis, timed to "
        "the import's completion (file scan, outbox relay, broker, chunks, result file); "
        "floor = the batch floor in 2 processes, each with its own members (never waiting "
        "for the other's locks); no hordak run in 2 processes for it",
    )
    api = pick(runs, "api", "api", "rate")
    services = pick(runs, "api", "services", "rate")
    rate_row(
        "GraphQL recordPurchase end to end, 2 gunicorn workers (req/s)",
        api,
        pick(runs, "ledger", "a2", "rate"),
        None,
        "no hordak equivalent (hordak has no API); floor = raw SQL earn, 2 processes; "
        f"services layer (purchase_record, 2 processes) {fmt(services)}/s, "
        f"÷ services {ratio(api, services)}",
    )
    settle = med([s["seconds"] for s in settlement])
    settle_rate = med([s["rate"] for s in settlement])
    transactions = settlement[0]["transactions"] if settlement else None
    rows.append(
        f"| settlement run over {fmt(transactions)} transactions (s; tx/s) | {fmt(settle, ' s')}"
        f" ({fmt(settle_rate)}/s) | — | — | — | — | no hordak equivalent; no separate raw-SQL "
        "floor (run_create is two SQL statements; bench.settlement times them alone) |"
    )

    if expiry is not None:
        ours, peer = expiry.get("rate"), expiry.get("peer", {}).get("rate")
        lots = expiry.get("lots") or expiry.get("peer", {}).get("n")
        over_100 = expiry.get("burns_over_100")
        over_100 = "—" if over_100 is None else f"{over_100:,.0f}"
        rate_row(
            f"expiry sweep over {fmt(lots)} due lots (lots/s)",
            ours,
            expiry.get("floor_rate"),
            peer,
            verdict(ours, peer) + f": {fmt(expiry.get('seconds'), ' s')} (goal ≤ 60 s per "
            f"1,000,000 lots); burns at the sweep's front waited p99 "
            f"{fmt(expiry.get('burn_p99'), ' ms')}, max {fmt(expiry.get('burn_max'), ' ms')} "
            f"(alone p50 {fmt(expiry.get('burn_alone_p50'), ' ms')}); "
            f"{over_100} waited more than 100 ms for a lock (goal: "
            "none; the server's lock_timeout counts them); chunks held their wallets p99 "
            f"{fmt(expiry.get('chunk_p99'), ' ms')}, max {fmt(expiry.get('chunk_max'), ' ms')}. "
            "Hordak: "
            "bulk_create of a transfer per account to breakage, per chunk; no lots, so "
            "nothing decided about what is due, no locks, no balance or hold check",
        )

    latency = []
    for name, key in (("balance read", "balance"), ("history page (20 rows)", "history")):
        ours = pick(runs, "reads", key, "p50")
        ours99 = pick(runs, "reads", key, "p99")
        peer = pick(runs, "peer", f"{key}_sql", "p50")
        peer99 = pick(runs, "peer", f"{key}_sql", "p99")
        orm = pick(runs, "peer", key, "p50")
        orm99 = pick(runs, "peer", key, "p99")
        latency.append(
            f"| {name} | {fmt(ours)} / {fmt(ours99)} | {fmt(peer)} / {fmt(peer99)} | "
            f"{ratio(peer, ours)} | {verdict(ours, peer, higher_is_better=False)} | "
            f"{fmt(orm)} / {fmt(orm99)} |"
        )

    behind = []
    for label, ours, peer in (
        ("single earn, 1 process", earn1, pick(runs, "peer", "earn1", "rate")),
        (
            "single earn, 2 processes",
            pick(runs, "ledger", "b2", "rate"),
            pick(runs, "peer", "earn2", "rate"),
        ),
        ("burn", burn, peer_burn),
        ("batch accrual", batch, peer_batch),
        (
            "expiry sweep",
            (expiry or {}).get("rate"),
            (expiry or {}).get("peer", {}).get("rate"),
        ),
    ):
        if ours is not None and peer is not None and ours <= peer:
            behind.append(f"{label} ({ours / peer:.2f} × hordak)")
    honest = (
        "Coalition is **behind django-hordak** on: "
        + "; ".join(behind)
        + ". That is the cost of what hordak does not do per posting: Coalition's earn "
        "locks the wallet, checks idempotency, writes a lot (for expiry) and keeps the cached "
        "balance by trigger, and its burn checks the balance and consumes lots in expiry "
        "order; hordak writes a transaction and two legs and checks only that they balance. "
        'The goal "every workload ahead of hordak" is not met for these.'
        if behind
        else "Coalition is ahead of django-hordak on every workload hordak can do."
    )

    file_rate = max(filter(None, [batch, celery_import]), default=None)
    import_line = (
        f"**{fmt(file_rate)} purchases/s — goal "
        f"{'met' if file_rate >= IMPORT_GOAL else 'NOT met'}** (in process {fmt(batch)}/s; "
        f"Celery, 2 worker processes {fmt(celery_import)}/s; the raw-SQL floor of the same "
        f"work in 2 processes on this machine: {fmt(floor_parallel)}/s)"
        if file_rate
        else "not measured"
    )
    earn_ratio = earn1 / floor1 if earn1 and floor1 else None
    goal_line = (
        f"**{earn_ratio:.2f} × floor — goal ≥ {EARN_GOAL} "
        f"{'met' if earn_ratio >= EARN_GOAL else 'NOT met'}**"
        if earn_ratio is not None
        else "not measured"
    )
    per_run = "\n".join(
        f"| {i + 1} | {fmt(r.get('ledger', {}).get('b1', {}).get('rate'))} | "
        f"{fmt(r.get('ledger', {}).get('a', {}).get('rate'))} | "
        f"{fmt(r.get('peer', {}).get('earn1', {}).get('rate'))} | "
        f"{fmt(r.get('batch', {}).get('a', {}).get('rate'))} | "
        f"{fmt(r.get('batch', {}).get('e', {}).get('rate'))} | "
        f"{fmt(r.get('batch', {}).get('f', {}).get('rate'))} | "
        f"{fmt(r.get('api', {}).get('api', {}).get('rate'))} | {r['load_before']} | "
        f"{r['load_after']} | {r['elapsed']:.0f} s |"
        for i, r in enumerate(runs)
    )
    problems = "\n".join(f"- {p}" for p in meta["problems"]) or "- none"
    return f"""# Benchmarks, side by side

Written by `python -m bench` (bench/__main__.py) on {meta["date"]}; {meta["mode"]}.
Re-run it to refresh this file; figures move with the machine and its load.

## Machine

- {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, PostgreSQL {meta["pg"]}
- load average (1 / 5 / 15 min): before {meta["load_before"]}, after {meta["load_after"]}
  (the machine is shared: other jobs move the numbers)
- peer: {meta["peer"]}
- whole run: {meta["elapsed"]:.0f} s

## Goals

- single earn (`points_earn`, 1 process) ≥ 0.35 × the raw-SQL floor: {goal_line}
- file import ≥ {IMPORT_GOAL:,} purchases/s on this machine: {import_line}
- every workload ahead of django-hordak: see the "vs hordak" columns; where hordak has no
  equivalent (GraphQL API, settlement) it says so.

{honest}

## Throughput (medians of {len(runs)} run(s); higher is better)

| workload | Coalition | raw-SQL floor | ÷ floor | django-hordak | ÷ hordak | vs hordak |
|---|---:|---:|---:|---:|---:|---|
{chr(10).join(rows)}

## Read latency (p50 / p99 ms, medians of {len(runs)} run(s); lower is better)

| read | Coalition (SQL) | hordak (SQL) | hordak ÷ Coalition (p50) | vs hordak | hordak (ORM) |
|---|---:|---:|---:|---|---:|
{chr(10).join(latency)}

Both sides in plain SQL through one connection: Coalition's reads are `bench.reads`
(psycopg2 on the cached `coalition_account.balance` and the `txn_member_history` index, each
member once after one untimed pass over them), which
is itself the raw-SQL floor, so there is no separate floor column; hordak's are the same
reads on its tables (a SUM over the account's legs, as hordak keeps no cached balance; the
last 20 legs joined to their transactions), from `bench.peer_hordak`. The last column is
hordak's documented ORM path (`Account.get_balance()`, a `Leg` queryset) for reference. The
Django/GraphQL cost of Coalition's reads is not here (GraphQL `me {{ transactions }}`
latency: `python -m bench.api`). Hordak's SUM grows with the account's history; each bench
account holds only a few dozen legs, and the peer runs ANALYZE on its tables before the reads.

## What each figure is

- single earn / burn: `python -m bench.ledger` (b1, b2, c1 against the floors a, a2, c2:
  the very statements the services send on PostgreSQL, through psycopg2 — one for an earn,
  two for a burn — so the gap is Django and the services' Python). Hordak:
  `Account.transfer_to` in `transaction.atomic()` (one transaction, two legs, its deferred
  balance trigger), 1 and 2 processes.
- batch accrual: `python -m bench.batch` (a) `import_purchases --sync` in process against
  (c) its raw-SQL floor, chunks of 1000 alternating.
- file import through Celery: `python -m bench.batch --celery 2` (e): a file of
  --celery-rows rows sent with `manage.py import_purchases` (no --sync) to
  `celery -A config worker -c 2` on Redis, as deployed on a 2-core machine; timed from the
  command's start until the import is recorded as completed; its floor (f) is the batch
  floor (c) in 2 forked processes, each with its own half of the members.
- GraphQL: `python -m bench.api` phase (1b), recordPurchase only, closed loop, gunicorn on
  loopback, client on the same cores; (2) the services layer in 2 processes.
- settlement: `python -m bench.settlement` (`run_create` over a loaded ledger), loaded once,
  timed {len(settlement)} time(s).
- expiry: `python -m bench.expiry --lots N` (`points_expire_due`, 2 member ranges in
  parallel by default, over N due lots, one per
  member, while another process burns at the members the sweep is about to reach) against
  its raw-SQL floor (the same chunks in psycopg2); hordak: `python -m bench.peer_hordak
  --only expiry --expiry-lots N`. Run once (not per run); N is in the row's name.
- per-run durations and member counts: see `--help` of each bench and bench/__main__.py.

## Per run

| run | earn tx/s | earn floor | hordak earn | batch /s | Celery import /s | import floor, 2 \
processes | GraphQL req/s | load before | load after | took |
|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|
{per_run}

## Problems during this run

{problems}
"""


# ------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs; medians are quoted (3)")
    parser.add_argument("--quick", action="store_true", help="one run")
    parser.add_argument("--seconds", type=float, default=5.0, help="per timed workload (5)")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument(
        "--celery-rows", type=int, default=300_000, help="rows of the Celery file import"
    )
    parser.add_argument("--settlement-transactions", type=int, default=1_000_000)
    parser.add_argument(
        "--expiry-lots", type=int, default=100_000, help="due lots of the expiry row (100,000)"
    )
    parser.add_argument(
        "--skip", default="", help="comma list among ledger,reads,batch,api,peer,settlement,expiry"
    )
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    runs_wanted = 1 if args.quick else args.runs
    skip = set(filter(None, args.skip.split(",")))

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    problems: list[str] = []
    started = time.perf_counter()
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": f"{runs_wanted} run(s) of {args.seconds:g} s per timed workload"
        + (" (--quick)" if args.quick else ""),
        "pg": pg_version(),
        "load_before": load(),
        "peer": "django-hordak (not installed)",
    }
    seconds = f"{args.seconds:g}"
    runs: list[dict] = []
    for n in range(runs_wanted):
        log(f"run {n + 1}/{runs_wanted} (load {load()})")
        run: dict = {"load_before": load()}
        t0 = time.perf_counter()
        steps = [
            (
                "ledger",
                "bench.ledger",
                ["--seconds", seconds, "--members", str(args.members), "--breakdown", "0"],
                "coalition_bench_side_ledger",
                parse_ledger,
            ),
            (
                "reads",
                "bench.reads",
                ["--url", f"{PG}/coalition_bench_side_ledger", "--members", "500"]
                + ["--seed", str(n + 1)],
                None,
                parse_reads,
            ),
            (
                "batch",
                "bench.batch",
                ["--rows", str(args.batch_rows), "--members", "2000", "--no-check"]
                + ["--celery", "2", "--celery-rows", str(args.celery_rows)],
                "coalition_bench_side_batch",
                parse_batch,
            ),
            (
                "peer",
                "bench.peer_hordak",
                ["--seconds", seconds, "--members", "500", "--rows", str(args.batch_rows)],
                "coalition_bench_hordak",
                parse_peer,
            ),
            (
                "api",
                "bench.api",
                ["--seconds", seconds, "--open-seconds", seconds, "--levels", "4", "--pairs", "1"]
                + ["--cache", "locmem", "--members", "500", "--token-members", "50"],
                "coalition_bench_side_api",
                parse_api,
            ),
        ]
        for key, module, bench_args, db, parser_fn in steps:
            if key in skip:
                continue
            got = _run(module, bench_args, db, 300, log)
            run[key] = parser_fn(got[0]) if got else {}
            if not run[key]:
                problems.append(f"run {n + 1}: {module} gave no figures")
            if key == "peer" and run[key].get("version"):
                meta["peer"] = f"django-hordak {run[key]['version']} (Django 5.2, own process)"
        run["load_after"] = load()
        run["elapsed"] = time.perf_counter() - t0
        runs.append(run)

    settlement: list[dict] = []
    if "settlement" not in skip:
        log(f"settlement (load {load()})")
        got = _run(
            "bench.settlement",
            ["--transactions", str(args.settlement_transactions), "--members", "5000"]
            + ["--repeat", str(runs_wanted)],
            "coalition_bench_side_settlement",
            600,
            log,
        )
        settlement = parse_settlement(got[0]) if got else []
        if not settlement:
            problems.append("bench.settlement gave no figures")

    expiry: dict | None = None
    if "expiry" not in skip:
        log(f"expiry (load {load()})")
        lots = str(args.expiry_lots)
        got = _run(
            "bench.expiry",
            ["--lots", lots, "--no-check"],
            "coalition_bench_side_expiry",
            900,
            log,
        )
        expiry = parse_expiry(got[0]) if got else {}
        if "rate" not in expiry:
            problems.append("bench.expiry gave no figures")
        got = _run(
            "bench.peer_hordak",
            ["--only", "expiry", "--expiry-lots", lots],
            "coalition_bench_hordak",
            900,
            log,
        )
        expiry["peer"] = parse_peer(got[0]).get("expiry", {}) if got else {}
        if not expiry["peer"]:
            problems.append("bench.peer_hordak --only expiry gave no figures")

    meta["load_after"] = load()
    meta["elapsed"] = time.perf_counter() - started
    meta["problems"] = problems
    output = Path(args.output)
    text = render(runs, settlement, meta, expiry)
    # The soak (python -m bench.soak --write) keeps its own section across rewrites.
    from bench.soak import SOAK_END, SOAK_START

    if output.exists():
        previous = output.read_text(encoding="utf-8")
        if SOAK_START in previous and SOAK_END in previous:
            soak = SOAK_START + previous.split(SOAK_START, 1)[1].split(SOAK_END, 1)[0] + SOAK_END
            text = text.rstrip("\n") + "\n\n" + soak + "\n"
    output.write_text(text, encoding="utf-8")
    log(f"wrote {args.output} in {meta['elapsed']:.0f} s")


if __name__ == "__main__":
    main()
