"""The README's first command works on a fresh checkout: `./dev run 8765` in a clean clone
creates its virtualenv, migrates, seeds the demo, and answers on the portal, the API and the
admin; Ctrl-C (SIGINT to its process group, as a terminal sends it) stops everything.

Slow (a virtualenv, a pip install, the demo seed): it runs under CI=true, or locally with
COALITION_RUN_CLEAN_CLONE=1. It clones what is committed, not the working tree.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PORT = 8765
STRIPE_PORT = 12111  # ./dev run's emulator port
URLS = ("/portal/login/", "/graphql/", "/admin/login/")
# Up to ~6 minutes from clone to answers (a venv, pip from its cache, migrate, the demo seed).
START_TIMEOUT = int(os.environ.get("COALITION_RUN_CLEAN_CLONE_TIMEOUT", 6 * 60))
STOP_TIMEOUT = 60
# The embedded default: nothing of this machine's configuration leaks into the clone's run.
SCRUBBED = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CELERY_TASK_ALWAYS_EAGER",
    "CACHE_URL",
    "DJANGO_SETTINGS_MODULE",
    "DJANGO_ALLOW_ASYNC_UNSAFE",
    "STRIPE_API_BASE",
    "STRIPE_API_KEY",
    "VIRTUAL_ENV",
    "PYTHONPATH",
)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _status(url: str) -> int | None:
    """The status a browser gets (GraphiQL answers a browser's GET, not a bare one)."""
    request = urllib.request.Request(url, headers={"Accept": "text/html"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


def _session_processes(session_id: int) -> list[str]:
    """Processes (pid and command) still in the given session."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        # after the command: state, ppid, pgrp, session, ...; zombies are already gone
        if int(fields[3]) == session_id and fields[0] != "Z":
            found.append(f"{entry.name} {command}")
    return found


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def test_dev_run_from_a_clean_clone_answers_and_stops_cleanly(tmp_path):
    if os.environ.get("COALITION_RUN_CLEAN_CLONE") != "1" and os.environ.get("CI") != "true":
        pytest.skip(
            "slow (minutes): set COALITION_RUN_CLEAN_CLONE=1 to start ./dev run from a clone"
        )
    for port in (PORT, STRIPE_PORT):
        if _listening(port):
            pytest.fail(f"something listens on 127.0.0.1:{port}: stop it first")
    clone = tmp_path / "coalition"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    env = {key: value for key, value in os.environ.items() if key not in SCRUBBED}
    log = tmp_path / "dev-run.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            ["./dev", "run", str(PORT)],
            cwd=clone,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a terminal's job
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        answers: dict[str, int | None] = {}
        while time.monotonic() < deadline:
            assert process.poll() is None, f"./dev run exited early:\n{_tail(log)}"
            answers = {path: _status(f"http://127.0.0.1:{PORT}{path}") for path in URLS}
            if all(status == 200 for status in answers.values()):
                break
            time.sleep(2)
        assert all(status == 200 for status in answers.values()), (
            f"not answering after {START_TIMEOUT}s: {answers}\n{_tail(log)}"
        )
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(1)
        left = _session_processes(process.pid)
        for line in left:
            try:
                os.kill(int(line.split()[0]), signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert process.returncode is not None, "./dev run did not stop on SIGINT"
    assert not left, "processes outlived Ctrl-C:\n" + "\n".join(left)
    assert not _listening(PORT) and not _listening(STRIPE_PORT)
