"""GraphQL API throughput and latency (issue 4): gunicorn on PostgreSQL, driven over loopback.

Run it from the project root (needs the `bench` extras: `pip install -e .[bench]`, httpx):

    .venv/bin/python -m bench.api [--seconds N] [--open-seconds N] [--members N]

It prints numbers and asserts nothing about them (exit 1 only when the final correctness
check fails). The whole run stops by itself: every phase is bounded in time and in count
(--max-requests per phase). Default: about two minutes.

Database: its own PostgreSQL database (default `coalition_bench_api`, DATABASE_URL may name
another whose name contains "bench"), created if missing and migrated, as bench/ledger.py
does. Preparation (not timed): a partner with its terms and an API key (partner_create), M
members with their wallets in bulk, and member tokens (api.core.auth.member_token_issue) for
the members whose history is read.

Server: `gunicorn config.wsgi:application` bound to 127.0.0.1 only, --workers sync workers
(default 2, one per core; --worker-class gthread --threads T to try threads), settings
`config.settings.dev` with DEBUG=false and ALLOWED_HOSTS=127.0.0.1, rate limits raised
(API_RATE_LIMIT_DEFAULT, core/limits.py) so the bench is not throttled, the rate-limit
counters in Redis (CACHE_URL, as in production; --cache locmem to leave Redis out).

Load: an asyncio client (httpx) on loopback. Requests are `recordPurchase` (partner key, a
random member, a unique idempotency key) and, for --history-share of them (default 0.2),
`me { transactions(first: 20) { ... } }` with a member token.

Phases:
  (1) closed loop, N concurrent clients for N in --levels (default 4, 8, 16), --seconds each
      after a short warm-up: requests/s, p50/p95/p99 of each operation;
  (1b) closed loop, purchases only, at the best N: recordPurchase throughput;
  (2) `partners.services.purchase_record` called directly from 2 processes for --seconds
      (the server idle): the services-layer rate. (1b) and (2) alternate --pairs times
      (default 2), so that each ratio (1b)/(2) compares runs next to each other in time;
      the goal line (>= 0.5) is the mean of those ratios;
  (3) open loop at half the maximum rate of (1) for --open-seconds (default 20), same mix,
      latency measured from the scheduled send time: p99 (goal <= 50 ms).
Then the correctness check: `ledger_check` passes, and the transactions carrying this run's
idempotency keys are as many as the successful purchase responses (and the services-layer
calls). With --profile N, N purchases and N history reads through Django's test client under
cProfile (the statements each sends, and where the time goes).

The machine's load average is printed before and after: the client and the server share the
cores, and other jobs on the machine move the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import multiprocessing
import os
import pstats
import random
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import members_bulk_create
from bench.ledger import _db_config, ensure_database, setup_django

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/coalition_bench_api"
ROOT = Path(__file__).resolve().parent.parent
PARTNER_CODE = "BENCH-API"
GOAL_RATIO = 0.5
GOAL_P99_MS = 50.0

PURCHASE = """
mutation Purchase($input: RecordPurchaseInput!) {
  recordPurchase(input: $input) {
    pointsAwarded
    transaction { id points }
    errors { code message }
  }
}
"""
HISTORY = """
query History {
  me { transactions(first: 20) { edges { node { points partner { name } } } } }
}
"""


# --------------------------------------------------------------------------- fixture


@dataclass
class Fixture:
    run: str
    partner_id: int
    api_key: str
    member_numbers: list[str]
    member_tokens: list[str]


def prepare(members: int, token_members: int, log) -> Fixture:

    from api.core.auth import member_token_issue
    from coalition.services import programme_get
    from partners.models import Partner
    from partners.services.accounts import api_key_create, partner_create

    programme_get()
    partner = Partner.objects.filter(code=PARTNER_CODE).first()
    if partner is None:
        partner, raw_key = partner_create(
            code=PARTNER_CODE,
            name="Bench API partner",
            currency="USD",
            earn_rate="1",
            issuance_price="0.01",
            redemption_price="0.01",
        )
    else:
        _, raw_key = api_key_create(partner=partner, name="bench")
    run = secrets.token_hex(4)
    started = time.perf_counter()
    created = members_bulk_create(members, label="api", digit="8")
    tokens = [member_token_issue(m)[0] for m in created[:token_members]]
    log(
        f"  {members} members and wallets, {len(tokens)} member tokens in "
        f"{time.perf_counter() - started:.2f} s"
    )
    return Fixture(
        run=run,
        partner_id=partner.pk,
        api_key=raw_key,
        member_numbers=[m.member_number for m in created],
        member_tokens=tokens,
    )


# --------------------------------------------------------------------------- the server


def server_env(url: str, cache: str) -> dict:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        DJANGO_SETTINGS_MODULE="config.settings.dev",
        DEBUG="false",
        ALLOWED_HOSTS="127.0.0.1",
        LOG_LEVEL="WARNING",
        API_RATE_LIMIT_DEFAULT="100000000/m",
        PYTHONUNBUFFERED="1",
    )
    if cache == "redis":
        env["CACHE_URL"] = os.environ.get("BENCH_CACHE_URL", "redis://127.0.0.1:6379/0")
    else:
        env.pop("CACHE_URL", None)
    return env


def start_server(args, url: str, log) -> subprocess.Popen:
    command = [
        str(ROOT / ".venv" / "bin" / "gunicorn"),
        "config.wsgi:application",
        "--bind",
        f"127.0.0.1:{args.port}",
        "--workers",
        str(args.workers),
        "--worker-class",
        args.worker_class,
        "--log-level",
        "warning",
        "--timeout",
        "60",
    ]
    if args.worker_class == "gthread":
        command += ["--threads", str(args.threads)]
    log("  " + " ".join(command[1:]))
    proc = subprocess.Popen(
        command, cwd=ROOT, env=server_env(url, args.cache), start_new_session=True
    )
    return proc


async def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                sys.exit(f"gunicorn exited with {proc.returncode}")
            try:
                response = await client.post("/graphql/", json={"query": "{ __typename }"})
                if response.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    sys.exit("gunicorn did not answer in time")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: gunicorn and its workers only
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --------------------------------------------------------------------------- the load


@dataclass
class Stats:
    purchase: list[float] = field(default_factory=list)  # seconds, successful
    history: list[float] = field(default_factory=list)
    purchase_ok: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    client_cpu: float = 0.0  # CPU seconds the load generator itself used
    load1: float = float("nan")  # the machine's 1-minute load average after the run

    def fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1

    @property
    def requests(self) -> int:
        return len(self.purchase) + len(self.history)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return (ordered[low] + (ordered[high] - ordered[low]) * (pos - low)) * 1000


class Load:
    """Builds and sends the two requests; records the outcome in a Stats."""

    def __init__(self, fixture: Fixture, history_share: float, tag: str):
        self.fixture = fixture
        self.history_share = history_share
        self.tag = tag
        self.sequence = 0
        self.rng = random.Random(tag)  # noqa: S311 - load mix, not security

    def next_is_history(self) -> bool:
        return self.rng.random() < self.history_share

    async def one(self, client, stats: Stats, history: bool, started: float | None = None):
        """Send one request; latency from `started` (the scheduled time) or from now."""
        import httpx

        fixture = self.fixture
        if history:
            token = self.rng.choice(fixture.member_tokens)
            body = {"query": HISTORY}
        else:
            token = fixture.api_key
            self.sequence += 1
            key = f"api-{fixture.run}-{self.tag}-{self.sequence}"
            body = {
                "query": PURCHASE,
                "variables": {
                    "input": {
                        "memberNumber": self.rng.choice(fixture.member_numbers),
                        "amount": f"{self.rng.randint(100, 20000) / 100:.2f}",
                        "currency": "USD",
                        "reference": key,
                        "idempotencyKey": key,
                    }
                },
            }
        t0 = time.perf_counter() if started is None else started
        try:
            response = await client.post(
                "/graphql/", json=body, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as exc:
            stats.fail(type(exc).__name__)
            return
        latency = time.perf_counter() - t0
        if response.status_code != 200:
            stats.fail(f"HTTP {response.status_code}")
            return
        data = response.json()
        if data.get("errors"):
            stats.fail(str(data["errors"][0].get("message"))[:60])
            return
        if history:
            if data["data"]["me"] is None:
                stats.fail("me is null")
                return
            stats.history.append(latency)
        else:
            payload = data["data"]["recordPurchase"]
            if payload["errors"] or payload["transaction"] is None:
                stats.fail(f"purchase: {payload['errors'][:1]}")
                return
            stats.purchase.append(latency)
            stats.purchase_ok += 1


def _client(base: str, connections: int):
    import httpx

    return httpx.AsyncClient(
        base_url=base,
        timeout=30.0,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


async def closed_loop(base, load: Load, clients: int, seconds: float, max_requests: int) -> Stats:
    stats = Stats()
    async with _client(base, clients) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline and stats.requests < max_requests:
                await load.one(client, stats, load.next_is_history())

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(clients)))
        stats.elapsed = time.perf_counter() - started
        stats.client_cpu = time.process_time() - cpu
    return stats


async def open_loop(base, load: Load, rate: float, seconds: float, max_requests: int) -> Stats:
    """Requests at fixed intervals whatever the answers; latency from the scheduled time, so
    a server that falls behind is charged for the wait (no coordinated omission)."""
    stats = Stats()
    total = min(int(rate * seconds), max_requests)
    interval = 1.0 / rate
    async with _client(base, 256) as client:
        started, cpu = time.perf_counter(), time.process_time()
        tasks = []
        for n in range(total):
            when = started + n * interval
            delay = when - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(load.one(client, stats, load.next_is_history(), when)))
        await asyncio.gather(*tasks)
        stats.elapsed = time.perf_counter() - started
        stats.client_cpu = time.process_time() - cpu
    return stats


# --------------------------------------------------------------------------- services layer


def _services_worker(url, fixture, tag, seconds, max_calls, barrier, results) -> None:
    setup_django(url)
    from django.db import connections

    from partners.models import Partner
    from partners.services.earning import purchase_record

    partner = Partner.objects.get(pk=fixture.partner_id)
    rng = random.Random(tag)  # noqa: S311

    def call(n: int) -> None:
        key = f"svc-{fixture.run}-{tag}-{n}"
        purchase_record(
            partner=partner,
            idempotency_key=key,
            amount=f"{rng.randint(100, 20000) / 100:.2f}",
            currency="USD",
            reference=key,
            member_number=rng.choice(fixture.member_numbers),
        )

    for n in range(30):  # warm-up
        call(-1 - n)
    barrier.wait()
    latencies = []
    started = time.perf_counter()
    deadline = started + seconds
    n = 0
    while n < max_calls:
        t0 = time.perf_counter()
        call(n)
        t1 = time.perf_counter()
        latencies.append(t1 - t0)
        n += 1
        if t1 >= deadline:
            break
    results.put((latencies, time.perf_counter() - started))
    connections.close_all()


def services_rate(url, fixture, seconds, max_calls, label: str, procs=2):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(procs)
    results = ctx.Queue()
    workers = [
        ctx.Process(
            target=_services_worker,
            args=(url, fixture, f"{label}p{i}", seconds, max_calls, barrier, results),
        )
        for i in range(procs)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=seconds + 120) for _ in workers]
    for worker in workers:
        worker.join()
    latencies = [lat for lats, _ in outcomes for lat in lats]
    elapsed = max(e for _, e in outcomes)
    return latencies, elapsed, procs * 30


# --------------------------------------------------------------------------- profiling


def profile_requests(fixture: Fixture, count: int, log) -> None:
    """N purchases and N history reads through Django's test client, under cProfile."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()

    def purchase(n: int):
        key = f"api-{fixture.run}-profile-{n}"
        body = {
            "query": PURCHASE,
            "variables": {
                "input": {
                    "memberNumber": fixture.member_numbers[n % len(fixture.member_numbers)],
                    "amount": "12.34",
                    "currency": "USD",
                    "reference": key,
                    "idempotencyKey": key,
                }
            },
        }
        response = client.post(
            "/graphql/",
            json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {fixture.api_key}",
        )
        assert response.status_code == 200 and not response.json().get("errors"), response
        return response

    def history(n: int):
        return client.post(
            "/graphql/",
            json.dumps({"query": HISTORY}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {fixture.member_tokens[n % len(fixture.member_tokens)]}",
        )

    for name, op in (("recordPurchase", purchase), ("me.transactions", history)):
        op(10_000_000)  # warm
        with CaptureQueriesContext(connection) as captured:
            op(10_000_001)
        log(f"\n{name}: {len(captured.captured_queries)} statements per request")
        for query in captured.captured_queries:
            log(f"    {' '.join(query['sql'].split())[:110]}")
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for n in range(count):
            op(10_000_100 + n)
        profiler.disable()
        per = (time.perf_counter() - started) / count * 1000
        log(f"{name}: {per:.2f} ms per request in-process under cProfile ({count} requests)")
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
        log(out.getvalue())
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
        log(out.getvalue())


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per closed-loop run (8)")
    parser.add_argument("--open-seconds", type=float, default=20.0, help="open loop (20)")
    parser.add_argument(
        "--levels", type=lambda t: [int(x) for x in t.split(",")], default=[4, 8, 16]
    )
    parser.add_argument("--history-share", type=float, default=0.2)
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--token-members", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-class", default="sync", choices=["sync", "gthread"])
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--cache", default="redis", choices=["redis", "locmem"])
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--max-requests", type=int, default=100_000, help="per phase")
    parser.add_argument("--recreate", action="store_true")
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    parser.add_argument("--pairs", type=int, default=2, help="(1b)+(2) pairs (2)")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, flush=True)

    load_before = os.getloadavg()
    url = os.environ.get("BENCH_API_DATABASE_URL", DEFAULT_URL)
    config = _db_config(url)
    if ensure_database(config, recreate=args.recreate):
        log(f"created database {config['NAME']}")
    setup_django(url)
    from django.core.management import call_command

    log(f"migrating {config['NAME']} ...")
    call_command("migrate", interactive=False, verbosity=0)
    log("preparing ...")
    fixture = prepare(args.members, args.token_members, log)
    from django.db import connections

    connections.close_all()

    base = f"http://127.0.0.1:{args.port}"
    log("starting gunicorn ...")
    proc = start_server(args, url, log)
    rows = []
    try:
        asyncio.run(wait_ready(base, proc))
        # warm-up: every worker imports, connects, fills its caches
        warm = Load(fixture, args.history_share, "warm")
        asyncio.run(closed_loop(base, warm, 4, 2.0, 2000))
        closed: list[tuple[int, Stats]] = []
        for n in args.levels:
            stats = asyncio.run(
                closed_loop(
                    base,
                    Load(fixture, args.history_share, f"c{n}"),
                    n,
                    args.seconds,
                    args.max_requests,
                )
            )
            stats.load1 = os.getloadavg()[0]
            closed.append((n, stats))
            rows.append((f"(1) closed loop, mix, N={n}", stats))
            log(f"  N={n}: {stats.requests / stats.elapsed:.1f} req/s")
        best_n, best = max(closed, key=lambda item: item[1].requests / item[1].elapsed)
        max_rate = best.requests / best.elapsed
        # (1b) and (2) alternate, twice: each ratio compares neighbours in time, as the
        # machine's other load moves.
        pairs, services = [], []
        for rep_n in range(1, args.pairs + 1):
            only = asyncio.run(
                closed_loop(
                    base,
                    Load(fixture, 0.0, f"po{rep_n}"),
                    best_n,
                    args.seconds,
                    args.max_requests,
                )
            )
            only.load1 = os.getloadavg()[0]
            rows.append((f"(1b) closed, purchases only, N={best_n} #{rep_n}", only))
            log(f"  purchases only: {only.purchase_ok / only.elapsed:.1f} req/s")
            svc = services_rate(url, fixture, args.seconds, args.max_requests, f"r{rep_n}")
            services.append(svc)
            svc_rate = len(svc[0]) / svc[1]
            log(f"  services layer: {svc_rate:.1f} calls/s")
            pairs.append((only.purchase_ok / only.elapsed, svc_rate, os.getloadavg()[0]))
        open_stats = asyncio.run(
            open_loop(
                base,
                Load(fixture, args.history_share, "open"),
                max_rate / 2,
                args.open_seconds,
                args.max_requests,
            )
        )
        open_stats.load1 = os.getloadavg()[0]
        rows.append((f"(3) open loop at {max_rate / 2:.0f} req/s", open_stats))
    finally:
        stop_server(proc)
    svc_calls = sum(len(lats) + warm for lats, _, warm in services)

    if args.profile:
        profile_requests(fixture, args.profile, log)

    # ---------------------------------------------------------------- report
    log("")
    log(
        f"bench.api — gunicorn {args.workers} {args.worker_class} workers"
        + (f" x {args.threads} threads" if args.worker_class == "gthread" else "")
        + f", PostgreSQL {config['NAME']}, cache {args.cache}, {os.cpu_count()} CPUs, "
        f"mix {1 - args.history_share:.0%} recordPurchase / {args.history_share:.0%} me history"
    )
    log(
        "load average (1/5/15 min): before "
        + " ".join(f"{x:.2f}" for x in load_before)
        + ", end "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    header = (
        f"{'run':<40} {'req/s':>7} {'purch/s':>7} {'p50 P':>7} {'p95 P':>7} {'p99 P':>7} "
        f"{'p50 H':>7} {'p95 H':>7} {'p99 H':>7} {'fail':>5} {'client':>6} {'load1':>5}"
    )
    log(header)
    log("-" * len(header))
    for label, stats in rows:
        log(
            f"{label:<40} {stats.requests / stats.elapsed:>7.1f} "
            f"{len(stats.purchase) / stats.elapsed:>7.1f} "
            f"{pct(stats.purchase, 0.5):>7.1f} {pct(stats.purchase, 0.95):>7.1f} "
            f"{pct(stats.purchase, 0.99):>7.1f} {pct(stats.history, 0.5):>7.1f} "
            f"{pct(stats.history, 0.95):>7.1f} {pct(stats.history, 0.99):>7.1f} "
            f"{sum(stats.failures.values()):>5} {stats.client_cpu / stats.elapsed:>6.0%} "
            f"{stats.load1:>5.2f}"
        )
    for rep_n, ((lats, elapsed, _), (_, _, load1)) in enumerate(
        zip(services, pairs, strict=True), 1
    ):
        rate = len(lats) / elapsed
        log(
            f"{f'(2) purchase_record, 2 processes #{rep_n}':<40} {rate:>7.1f} {rate:>7.1f} "
            f"{pct(lats, 0.5):>7.1f} {pct(lats, 0.95):>7.1f} {pct(lats, 0.99):>7.1f} "
            f"{'':>7} {'':>7} {'':>7} {'':>5} {'':>6} {load1:>5.2f}"
        )
    log(
        "(latencies in ms; P = recordPurchase, H = me { transactions(first: 20) }; client = "
        "CPU of the load generator, share of one core; load1 = 1-min load average after)"
    )
    for label, stats in rows:
        if stats.failures:
            log(f"  failures in {label}: {stats.failures}")
    open_p99 = pct(open_stats.purchase + open_stats.history, 0.99)
    log(
        f"open loop: {open_stats.requests} answered of {int(max_rate / 2 * args.open_seconds)} "
        f"sent in {open_stats.elapsed:.1f} s; p99 purchase {pct(open_stats.purchase, 0.99):.1f} "
        f"ms, history {pct(open_stats.history, 0.99):.1f} ms"
    )
    ratios = [api / svc for api, svc, _ in pairs]
    ratio = sum(ratios) / len(ratios)
    log("")
    log(
        f"recordPurchase throughput / services-layer rate = {ratio:.2f} "
        f"(mean of the pairs {', '.join(f'{api:.1f}/{svc:.1f}' for api, svc, _ in pairs)} "
        f"per s) (goal >= {GOAL_RATIO})"
    )
    log(f"p99 at half max rate = {open_p99:.1f} ms (goal <= {GOAL_P99_MS:.0f} ms)")

    # ---------------------------------------------------------------- correctness
    from coalition.models import LedgerTransaction
    from coalition.selectors import ledger_check

    caller = f"partner:{fixture.partner_id}"
    api_ok = sum(stats.purchase_ok for _, stats in rows) + args.profile + (2 if args.profile else 0)
    api_rows = LedgerTransaction.objects.filter(
        caller=caller, idempotency_key__startswith=f"api-{fixture.run}-"
    ).count()
    svc_rows = LedgerTransaction.objects.filter(
        caller=caller, idempotency_key__startswith=f"svc-{fixture.run}-"
    ).count()
    # the warm-up's successes are not in `rows`
    warm_rows = LedgerTransaction.objects.filter(
        caller=caller, idempotency_key__startswith=f"api-{fixture.run}-warm-"
    ).count()
    report = ledger_check()
    counts_ok = api_rows - warm_rows == api_ok and svc_rows == svc_calls
    log(
        f"check_ledger: {'ok' if report.ok else 'BROKEN'} ({report.transactions} transactions); "
        f"API transactions {api_rows - warm_rows} (+{warm_rows} warm-up) = successful responses "
        f"{api_ok}: {'yes' if api_rows - warm_rows == api_ok else 'NO'}; services-layer "
        f"transactions {svc_rows} = calls {svc_calls}: {'yes' if svc_rows == svc_calls else 'NO'}"
    )
    for problem in report.problems[:10]:
        log(f"  {problem}")
    connections.close_all()
    if not (report.ok and counts_ok):
        sys.exit(1)


if __name__ == "__main__":
    main()
