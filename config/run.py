"""`./dev run`: start the Stripe emulator on loopback, migrate and seed the demo coalition
(idempotent: a second run adds nothing and starts in seconds), start the web server, print
where everything is with the demo credentials, and stop it all on Ctrl-C."""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _wait_for_port(port: int, timeout: float, process: subprocess.Popen) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _demo_partner_key(python: str, env: dict) -> str:
    """A fresh API key for the demo grocer (keys are stored hashed, so a new one is made)."""
    done = subprocess.run(
        [python, "manage.py", "demo_partner_key", "FRESHMART"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    lines = done.stdout.strip().splitlines()
    return lines[-1] if done.returncode == 0 and lines else "(run manage.py demo_partner_key)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--stripe-port", type=int, default=12111)
    args = parser.parse_args()
    for port in (args.port, args.stripe_port):
        if not _port_free(port):
            print(f"port {port} on 127.0.0.1 is in use; choose another", file=sys.stderr)
            return 2

    env = {**os.environ, "STRIPE_API_BASE": f"http://127.0.0.1:{args.stripe_port}"}
    python = sys.executable
    children: list[subprocess.Popen] = []

    def stop(*_):
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()

    signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(0)))
    try:
        print("==> starting the Stripe emulator", flush=True)
        log_dir = ROOT / "var"
        log_dir.mkdir(exist_ok=True)
        emulator_log = open(log_dir / "stripe-emulator.log", "ab")  # noqa: SIM115
        print(f"    its requests are logged to {log_dir / 'stripe-emulator.log'}", flush=True)
        emulator = subprocess.Popen(
            [python, "manage.py", "stripe_emulator", "--port", str(args.stripe_port)],
            cwd=ROOT,
            env=env,
            stdout=emulator_log,
            stderr=emulator_log,
        )
        children.append(emulator)
        if not _wait_for_port(args.stripe_port, 30, emulator):
            print("the Stripe emulator did not start", file=sys.stderr)
            return 1
        for step, command in (
            ("migrating the database", ["migrate", "--no-input", "-v0"]),
            ("seeding the demo coalition (first run: about a minute)", ["seed_demo"]),
        ):
            print(f"==> {step}", flush=True)
            done = subprocess.run([python, "manage.py", *command], cwd=ROOT, env=env)
            if done.returncode != 0:
                print(f"{step} failed", file=sys.stderr)
                return 1
        print("==> starting the web server", flush=True)
        server = subprocess.Popen(
            [python, "manage.py", "runserver", f"127.0.0.1:{args.port}", "--noreload"],
            cwd=ROOT,
            env=env,
        )
        children.append(server)
        if not _wait_for_port(args.port, 60, server):
            print("the web server did not start", file=sys.stderr)
            return 1
        base = f"http://127.0.0.1:{args.port}"
        print(
            "\nCoalition is running (Ctrl-C stops everything):\n"
            f"  GraphQL + GraphiQL  {base}/graphql/\n"
            f"  member portal       {base}/portal/  (demo@coalition.local / demo-member-1)\n"
            f"  finance dashboard   {base}/finance/ (finance / finance-demo-1; a second\n"
            f"                      approver: controller / finance-demo-2)\n"
            f"  admin               {base}/admin/   (admin / coalition-demo)\n"
            f"  Stripe emulator     http://127.0.0.1:{args.stripe_port}\n"
            f"  partner API key     {_demo_partner_key(python, env)}\n",
            flush=True,
        )
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop()


if __name__ == "__main__":
    sys.exit(main())
