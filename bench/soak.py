"""Soak: the API under steady load for a long time (issue 9).

    .venv/bin/python -m bench.soak [--minutes 10] [--rate R] [--probe-seconds 20]
        [--workers W] [--database coalition_soak] [--purchase-share 0.8] [--write]

What it does
1. Prepares its own PostgreSQL database on 127.0.0.1:5432 (default `coalition_soak`; the
   name must contain "soak" or "bench"; created and migrated if missing), a partner
   (`manage.py create_partner`) and members with passwords, enrolled and logged in over the
   API (the tokens of the `me` queries).
2. Serves the project with gunicorn on loopback (dev settings, DEBUG off, tasks in-process:
   nothing is sent to a shared broker), W sync workers (default 2 × CPUs + 1).
3. Unless --rate is given, finds the maximum sustainable rate of the mix: closed-loop
   clients for --probe-seconds, the rate they reach without errors. The soak runs at half.
4. Runs the API benchmark's mix (bench/api.py: 80 % purchases, 20 % history) open-loop at
   that rate for --minutes: `recordPurchase` (partner key, a new idempotency key each) and
   the member's `me` history query (balance and the last 20 transactions), --purchase-share
   of them purchases. Latency is measured
   from when each request was due, so a server that falls behind shows it.
5. Prints, per minute, requests, errors, p50/p99/max latency; at the start and the end the
   RSS of every process (gunicorn master and workers, the PostgreSQL backends serving the
   soak, this load generator); then the totals. Exits 1 if any request failed. With --write
   the same figures go into BENCHMARKS.md as its soak section (replacing the previous one;
   `python -m bench` keeps that section when it rewrites the file).

It asserts nothing else: the figures are for a person to read (and the lead to compare).
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import requests

PROJECT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
RECORD = """mutation($input: RecordPurchaseInput!) { recordPurchase(input: $input) {
  transaction { id points } errors { code message } } }"""
ME = """{ me { balance transactions(first: 20) { totalCount edges { node {
  id kind points reference createdAt partner { code } } } } } }"""
ENROLL = """mutation($input: EnrollMemberInput!) { enrollMember(input: $input) {
  member { memberNumber } errors { code message } } }"""
LOGIN = """mutation($input: MemberLoginInput!) { memberLogin(input: $input) {
  token errors { code message } } }"""


# --------------------------------------------------------------------------- setup


def database_url(name: str) -> str:
    return f"postgres://postgres@127.0.0.1:5432/{name}"


def ensure_database(name: str) -> None:
    if "soak" not in name and "bench" not in name:
        raise SystemExit("the database name must contain 'soak' or 'bench'")
    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def server_env(database: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "DEBUG")}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.dev",
            "DEBUG": "false",
            "DATABASE_URL": database_url(database),
            "CONN_MAX_AGE": "60",
            "CELERY_TASK_ALWAYS_EAGER": "true",
            "API_RATE_LIMIT_DEFAULT": "10000000/m",
            "API_RATE_LIMIT_LOGIN": "10000000/m",
            "LOG_LEVEL": "WARNING",
        }
    )
    return env


def manage(env: dict, *args: str) -> str:
    result = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=PROJECT, env=env, capture_output=True, text=True
    )
    if result.returncode:
        raise SystemExit(f"manage.py {args[0]} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def graphql(session, url, query, variables=None, token=None, timeout=30):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = session.post(
        url, json={"query": query, "variables": variables or {}}, headers=headers, timeout=timeout
    )
    return response


def prepare(url: str, env: dict, members: int) -> tuple[str, list[tuple[str, str]]]:
    """A partner key, and (member number, member token) for each member."""
    code = "SOAK" + secrets.token_hex(3).upper()
    key = manage(
        env, "create_partner", "--code", code, "--name", f"Soak {code}", "--currency", "USD",
        "--earn-rate", "1", "--issuance-price", "0.0100", "--redemption-price", "0.0080",
    ).strip().splitlines()[-1]  # fmt: skip
    session = requests.Session()
    people = []
    for n in range(members):
        email = f"soak-{code.lower()}-{n}@example.com"
        password = "soak-password-" + secrets.token_hex(4)
        body = graphql(
            session,
            url,
            ENROLL,
            {
                "input": {
                    "email": email,
                    "displayName": f"Soak {n}",
                    "password": password,
                    "idempotencyKey": f"enrol-{n}",
                }
            },
            token=key,
        ).json()
        number = body["data"]["enrollMember"]["member"]["memberNumber"]
        login = graphql(
            session, url, LOGIN, {"input": {"email": email, "password": password}}
        ).json()
        people.append((number, login["data"]["memberLogin"]["token"]))
    return key, people


# --------------------------------------------------------------------------- processes


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def postgres_backends(database: str) -> list[int]:
    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    with conn.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [database])
        pids = sorted(row[0] for row in cursor.fetchall())
    conn.close()
    return pids


def memory_report(label: str, gunicorn_pid: int, database: str) -> dict[str, int]:
    processes = {f"gunicorn master {gunicorn_pid}": gunicorn_pid}
    for pid in children(gunicorn_pid):
        processes[f"gunicorn worker {pid}"] = pid
    for pid in postgres_backends(database):
        processes[f"postgres backend {pid}"] = pid
    processes[f"load generator {os.getpid()}"] = os.getpid()
    sizes = {name: rss_kb(pid) for name, pid in processes.items()}
    print(f"\nRSS at {label}:")
    for name, size in sizes.items():
        print(f"  {name:<28} {size / 1024 if size else float('nan'):8.1f} MiB")
    return {name: size for name, size in sizes.items() if size}


# --------------------------------------------------------------------------- load


@dataclass
class Sample:
    due: float
    latency: float
    operation: str
    ok: bool
    error: str = ""


@dataclass
class Load:
    url: str
    key: str
    people: list[tuple[str, str]]
    purchase_share: float
    samples: list[Sample] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0

    def one(self, session: requests.Session, rng: random.Random) -> tuple[str, bool, str]:
        number, token = rng.choice(self.people)
        if rng.random() < self.purchase_share:
            with self.lock:
                self.counter += 1
                n = self.counter
            key = f"soak-{os.getpid()}-{n}"
            variables = {
                "input": {
                    "memberNumber": number,
                    "amount": f"{rng.randint(1, 200)}.{rng.randint(0, 99):02d}",
                    "currency": "USD",
                    "reference": key,
                    "idempotencyKey": key,
                }
            }
            operation, query, credential = "recordPurchase", RECORD, self.key
        else:
            operation, query, variables, credential = "me", ME, None, token
        try:
            response = graphql(session, self.url, query, variables, token=credential)
        except requests.RequestException as exc:
            return operation, False, type(exc).__name__
        if response.status_code != 200:
            return operation, False, f"HTTP {response.status_code}"
        body = response.json()
        data = (body.get("data") or {}).get(operation.split(".")[-1]) or {}
        if body.get("errors") or data.get("errors"):
            return operation, False, str(body)[:200]
        return operation, True, ""

    def record(self, sample: Sample) -> None:
        with self.lock:
            self.samples.append(sample)


def closed_loop(load: Load, clients: int, seconds: float) -> tuple[float, int]:
    """Requests/s reached by `clients` back-to-back clients, and the errors seen."""
    stop = time.monotonic() + seconds
    counts = [0] * clients
    errors = [0] * clients

    def client(index: int) -> None:
        session, rng = requests.Session(), random.Random(index)
        while time.monotonic() < stop:
            _, ok, _ = load.one(session, rng)
            counts[index] += 1
            errors[index] += not ok

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.monotonic() - start), sum(errors)


def open_loop(load: Load, rate: float, seconds: float, threads: int = 48) -> None:
    """Requests due at a fixed rate; latency counted from when each was due."""
    jobs: queue.Queue = queue.Queue(maxsize=10_000)
    start = time.monotonic()
    total = int(rate * seconds)

    def worker(index: int) -> None:
        session, rng = requests.Session(), random.Random(1000 + index)
        while True:
            due = jobs.get()
            if due is None:
                return
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            operation, ok, error = load.one(session, rng)
            load.record(Sample(due - start, time.monotonic() - due, operation, ok, error))

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    for i in range(total):
        jobs.put(start + i / rate)
    for _ in pool:
        jobs.put(None)
    for thread in pool:
        thread.join()


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def report(samples: list[Sample], minutes: float) -> tuple[int, list[tuple], tuple]:
    """Print the per-minute table and the totals; return (errors, minute rows, totals)."""
    print("\nminute  requests  errors   p50 ms   p99 ms   max ms   purchases  me")
    errors = 0
    rows = []
    for minute in range(int(minutes + 0.999)):
        bucket = [s for s in samples if minute * 60 <= s.due < (minute + 1) * 60]
        latencies = [s.latency * 1000 for s in bucket]
        failed = sum(not s.ok for s in bucket)
        errors += failed
        row = (
            minute + 1,
            len(bucket),
            failed,
            percentile(latencies, 0.5),
            percentile(latencies, 0.99),
            max(latencies, default=float("nan")),
            sum(s.operation == "recordPurchase" for s in bucket),
            sum(s.operation == "me" for s in bucket),
        )
        rows.append(row)
        print(
            f"{row[0]:>6}  {row[1]:>8}  {row[2]:>6}  {row[3]:7.1f}  {row[4]:7.1f}  {row[5]:7.1f}"
            f"  {row[6]:>9}  {row[7]:>4}"
        )
    latencies = [s.latency * 1000 for s in samples]
    error_rate = errors / max(len(samples), 1)
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    mean = statistics.fmean(latencies or [0])
    print(
        f"\ntotal: {len(samples)} requests, {errors} errors (error rate {error_rate:.4%}), "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, mean {mean:.1f} ms"
    )
    for sample in [s for s in samples if not s.ok][:5]:
        print(f"  error at {sample.due:.1f}s {sample.operation}: {sample.error}")
    return errors, rows, (len(samples), errors, error_rate, p50, p99, mean)


SOAK_START = "<!-- soak:start (written by python -m bench.soak --write) -->"
SOAK_END = "<!-- soak:end -->"


def soak_markdown(
    *, args, rate: float, probe: str, rows: list[tuple], totals: tuple, before: dict, after: dict
) -> str:
    """The soak's figures as a Markdown section for BENCHMARKS.md."""
    count, errors, error_rate, p50, p99, mean = totals
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        SOAK_START,
        "## Soak (issue 9)",
        "",
        f"`python -m bench.soak --write` on {stamp}: the API benchmark's mix "
        f"({args.purchase_share:.0%} `recordPurchase`, the rest the member's `me` history), "
        f"open loop at **{rate:.0f} requests/s for {args.minutes:g} min** = half the maximum "
        f"sustainable rate ({probe}); gunicorn with {args.workers} sync workers on loopback, "
        f"PostgreSQL, {os.cpu_count()} CPUs, load average at the end "
        f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        f"**{count:,} requests, {errors} errors (error rate {error_rate:.4%}); "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, mean {mean:.1f} ms.**",
        "",
        f"p99 in the first minute {rows[0][4]:.1f} ms, in the last {rows[-1][4]:.1f} ms; "
        f"RSS growth per process in the table below.",
        "",
        "| minute | requests | errors | p50 ms | p99 ms | max ms | recordPurchase | me |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r[0]} | {r[1]:,} | {r[2]} | {r[3]:.1f} | {r[4]:.1f} | {r[5]:.1f} "
        f"| {r[6]:,} | {r[7]:,} |"
        for r in rows
    ]
    lines += ["", "| process | RSS start MiB | RSS end MiB | growth MiB |", "|---|---:|---:|---:|"]
    for name in sorted(set(before) | set(after)):
        start, end = before.get(name), after.get(name)
        growth = f"{(end - start) / 1024:+.1f}" if start and end else "—"
        lines.append(
            f"| {name} | {start / 1024 if start else float('nan'):.1f} | "
            f"{end / 1024 if end else float('nan'):.1f} | {growth} |"
        )
    lines += [
        "",
        "Latency is counted from when each request was due (open loop), so a server that "
        "fell behind would show it. PostgreSQL backends are per connection (gunicorn workers "
        "keep theirs); a process missing at one end has a dash.",
        SOAK_END,
    ]
    return "\n".join(lines) + "\n"


def write_soak_section(section: str, path: Path = PROJECT / "BENCHMARKS.md") -> None:
    """Put the soak's section into BENCHMARKS.md, replacing the previous one (python -m bench
    keeps it when it rewrites the file)."""
    text = path.read_text() if path.exists() else "# Benchmarks, side by side\n"
    if SOAK_START in text and SOAK_END in text:
        head, rest = text.split(SOAK_START, 1)
        tail = rest.split(SOAK_END, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, help="requests/s (default: half the maximum)")
    parser.add_argument("--probe-seconds", type=float, default=20)
    parser.add_argument("--probe-clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1) + 1)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--purchase-share", type=float, default=0.8)  # bench/api.py's mix
    parser.add_argument("--database", default="coalition_soak")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--write", action="store_true", help="put the figures into BENCHMARKS.md (soak section)"
    )
    args = parser.parse_args()

    ensure_database(args.database)
    env = server_env(args.database)
    print(f"migrating {args.database} …", flush=True)
    manage(env, "migrate", "--no-input", "-v0")
    log_path = Path(tempfile.gettempdir()) / "coalition-soak-gunicorn.log"
    log = open(log_path, "w")  # noqa: SIM115
    server = subprocess.Popen(
        [
            str(Path(PYTHON).with_name("gunicorn")),
            "config.wsgi",
            "-b",
            f"127.0.0.1:{args.port}",
            "-w",
            str(args.workers),
            "--timeout",
            "60",
        ],
        cwd=PROJECT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{args.port}/graphql/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"http://127.0.0.1:{args.port}/portal/login/", timeout=2)
                break
            except requests.RequestException:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"gunicorn did not start ({log_path})") from None
                time.sleep(0.2)
        key, people = prepare(url, env, args.members)
        load = Load(url, key, people, args.purchase_share)
        rate = args.rate
        probe = f"--rate {rate} given"
        if rate is None:
            reached, errors = closed_loop(load, args.probe_clients, args.probe_seconds)
            probe = (
                f"{reached:.0f} requests/s reached by {args.probe_clients} closed-loop clients "
                f"over {args.probe_seconds:.0f} s, {errors} errors"
            )
            print(f"maximum sustainable rate: {probe}")
            rate = reached / 2
        print(
            f"soak: {rate:.0f} requests/s for {args.minutes:g} min, {args.workers} gunicorn "
            f"workers, {args.purchase_share:.0%} recordPurchase / me history",
            flush=True,
        )
        before = memory_report("start", server.pid, args.database)
        open_loop(load, rate, args.minutes * 60)
        after = memory_report("end", server.pid, args.database)
        print("\nRSS growth (end - start):")
        for name in sorted(set(before) & set(after)):
            print(f"  {name:<28} {(after[name] - before[name]) / 1024:+8.1f} MiB")
        errors, rows, totals = report(load.samples, args.minutes)
        if args.write:
            section = soak_markdown(
                args=args,
                rate=rate,
                probe=probe,
                rows=rows,
                totals=totals,
                before=before,
                after=after,
            )
            write_soak_section(section)
            print("\nwritten to BENCHMARKS.md (soak section)")
        return 1 if errors else 0
    finally:
        server.terminate()
        server.wait(20)
        log.close()


if __name__ == "__main__":
    raise SystemExit(main())
