"""Helpers of the reliability suite (issue 9): a counting webhook receiver, a broker outage
simulated by pointing Celery at a closed port, real Celery workers, throwaway PostgreSQL
clusters and live servers in subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection

PROJECT = Path(__file__).resolve().parent.parent.parent
PYTHON = sys.executable
PG_BIN = Path("/usr/lib/postgresql/15/bin")
CLOSED_PORT_BROKER = "redis://127.0.0.1:1/0"


# --------------------------------------------------------------------------- receiver


class CountingReceiver:
    """A partner's webhook endpoint on loopback: counts deliveries per event id."""

    def __init__(self, status: int = 200):
        receiver = self
        self.status = status
        self.lock = threading.Lock()
        self.bodies: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.bodies.append(json.loads(body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def counts(self) -> Counter:
        with self.lock:
            return Counter(body["id"] for body in self.bodies)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def counting_receiver(settings):
    settings.WEBHOOKS = {
        "TIMEOUT": 5,
        "RETRY_FOR_HOURS": 72,
        "ALLOW_HTTP": True,
        "ALLOW_PRIVATE_HOSTS": True,
    }
    receiver = CountingReceiver()
    yield receiver
    receiver.close()


# --------------------------------------------------------------------------- the broker


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname, parts.port


def _reset_celery_connections(app) -> None:
    """Forget pooled broker connections, so the next publish uses the configured URL."""
    from kombu import pools

    pools.reset()  # kombu's process-wide connection and producer pools
    app._pool = None
    app.amqp._producer_pool = None


@contextlib.contextmanager
def celery_broker(url: str | None, *, eager: bool, queue: str | None = None):
    """Run the block with Celery publishing to `url` (None: in-process, eager).

    The write URL is what is set: Celery prefers the CELERY_BROKER_URL environment variable
    to `broker_url`, but `broker_write_url` (when that variable's sibling is unset) wins."""
    from config.celery import app

    keys = ("broker_write_url", "task_always_eager", "task_default_queue")
    saved = {key: app.conf.get(key) for key in keys}
    _reset_celery_connections(app)
    app.conf.task_always_eager = eager
    if url is not None:
        app.conf.broker_write_url = url
        connection_for_write = app.connection_for_write()
        assert (connection_for_write.hostname, connection_for_write.port) == _host_port(url)
    if queue is not None:
        app.conf.task_default_queue = queue
    try:
        yield app
    finally:
        _reset_celery_connections(app)
        for key, value in saved.items():
            app.conf[key] = value


def broker_down():
    """The broker "stopped": every publish fails with kombu's OperationalError (connection
    refused on a closed port). The machine's Redis is left alone."""
    return celery_broker(CLOSED_PORT_BROKER, eager=False)


# --------------------------------------------------------------------------- subprocesses


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing answers on 127.0.0.1:{port}")


def database_url_of_tests() -> str:
    """A DATABASE_URL pointing at this pytest process's test database."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "127.0.0.1"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{credentials}@{host}{port}/{db['NAME']}"


def project_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST", "DJANGO_SETTINGS_MODULE"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "CONN_MAX_AGE": "0",
            "WEBHOOK_ALLOW_HTTP": "true",
            "WEBHOOK_ALLOW_PRIVATE_HOSTS": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def manage(*args: str, env: dict[str, str], timeout: float = 120) -> str:
    """Run `manage.py` in a subprocess; return its standard output (raise on failure)."""
    result = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


class CeleryWorker:
    """A real Celery worker (subprocess) consuming a queue of its own from Redis."""

    def __init__(self, *, env: dict[str, str], queue: str | None = None, log: Path):
        self.queue = queue or f"coalition-reliability-{uuid.uuid4().hex}"
        self.log = log
        self._log_file = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                str(Path(PYTHON).with_name("celery")),
                "-A",
                "config",
                "worker",
                "--pool=solo",
                "-Q",
                self.queue,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel=INFO",
            ],
            cwd=PROJECT,
            # Its own queue to consume and to publish to: nothing strays to a shared queue.
            env={
                **env,
                "CELERY_TASK_ALWAYS_EAGER": "false",
                "CELERY_TASK_DEFAULT_QUEUE": self.queue,
            },
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited:\n{self.log.read_text()}")
            if "ready." in self.log.read_text():
                return
            time.sleep(0.1)
        raise TimeoutError(f"worker not ready:\n{self.log.read_text()}")

    def kill(self) -> None:
        """kill -9: no warm shutdown, the task in hand is lost to this worker."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log_file.close()


# --------------------------------------------------------------------------- PostgreSQL


class ThrowawayCluster:
    """A PostgreSQL cluster of its own in a temporary folder owned by the postgres user,
    for tests that crash the database (`pg_ctl stop -m immediate`)."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="coalition-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"
        )

    @staticmethod
    def _as_postgres(*command: str, check: bool = True) -> subprocess.CompletedProcess:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run(
            [*as_postgres, *command], capture_output=True, text=True, check=check, timeout=120
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=on -c synchronous_commit=on -c max_connections=60"
        )
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def crash(self) -> None:
        """Stop at once, as a power cut would: no checkpoint, recovery from the WAL on start."""
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def stop(self) -> None:
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop", check=False
        )

    def url(self, database: str = "coalition") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def createdb(self, name: str = "coalition") -> None:
        self._as_postgres(
            str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
            name,
        )  # fmt: skip

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def pg_tools_available() -> bool:
    return (PG_BIN / "initdb").exists() and (os.geteuid() != 0 or shutil.which("runuser"))


@pytest.fixture
def throwaway_cluster():
    if not pg_tools_available():
        pytest.skip("needs PostgreSQL 15's initdb/pg_ctl")
    cluster = ThrowawayCluster()
    try:
        cluster.start()
        cluster.createdb()
        yield cluster
    finally:
        cluster.remove()


class LiveServer:
    """gunicorn serving the project on loopback, in a subprocess."""

    def __init__(self, *, env: dict[str, str], log: Path, workers: int = 2, threads: int = 1):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_file = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.log = log
        self.process = subprocess.Popen(
            [
                str(Path(PYTHON).with_name("gunicorn")),
                "config.wsgi",
                "-b",
                f"127.0.0.1:{self.port}",
                "-w",
                str(workers),
                "--threads",
                str(threads),
                "--timeout",
                "60",
                "--graceful-timeout",
                "5",
            ],
            cwd=PROJECT,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, process=self.process)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log_file.close()
