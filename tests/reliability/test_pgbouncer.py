"""Behind PgBouncer in transaction pooling mode (docs/scaling.md): many client connections
share two server connections, so nothing may rely on state a server session keeps between
transactions. With `DATABASE_TRANSACTION_POOLING=true` every write path used here works —
earns, burns, holds and captures from six threads, the outbox relay's lock, a read through
Django's `.iterator()` over more rows than one fetch, while the threads write — and the
ledger ties. With the ledger's prepared statements forced on, the same work fails: the test
does multiplex. (Server-side cursors, which the setting also turns off, did not fail here
when left on: PgBouncer kept the iterating client on one server connection in every try.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import pgbouncer_binary
from tests.reliability.conftest import free_port, manage, project_env, wait_for_port

pytestmark = [pytest.mark.postgres, pytest.mark.pgbouncer, pytest.mark.slow]

WORKLOAD = """
import json, threading
from datetime import date
from django.db import connections
from coalition import services
from coalition.models import Member
from coalition.outbox import outbox_relay
from partners.services import birthday_bonuses_grant
from tests import factories

programme = services.programme_get()
programme.min_redemption_points = 1
programme.birthday_bonus_points = 5
programme.save()
partner = factories.PartnerFactory()
members = [factories.member() for _ in range(12)]
errors, done = [], []

def work(number):
    try:
        for step in range(25):
            member = members[(number + step) % len(members)]
            key = f"t{number}-{step}"
            factories.earn(member, partner, 20, idempotency_key="earn-" + key)
            factories.burn(member, partner, 3, idempotency_key="burn-" + key)
            hold = factories.hold(member, partner, 4, idempotency_key="hold-" + key)
            factories.capture(hold, 2, idempotency_key="capture-" + key)
            done.append(key)
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}"[:300])
    finally:
        connections.close_all()

# More members than one fetch of .iterator() (500), born today, their bonuses given while
# the six threads write: a server-side cursor would be declared on one server connection
# and fetched from another.
today = date.today()
Member.objects.bulk_create(
    [Member(member_number=f"9{n:015d}", email=f"b{n}@example.com", display_name="B",
            birth_date=today.replace(year=1990)) for n in range(1200)]
)
from coalition.models import Account
Account.objects.bulk_create(
    [Account(kind=Account.Kind.MEMBER_WALLET, member=m)
     for m in Member.objects.filter(email__startswith="b", email__endswith="@example.com")]
)
given = []

def birthdays():
    try:
        given.append(birthday_bonuses_grant(today=today))
    except Exception as exc:
        errors.append(f"birthday: {type(exc).__name__}: {exc}"[:300])
    finally:
        connections.close_all()

threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
threads.append(threading.Thread(target=birthdays))
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()

try:
    relayed = outbox_relay()
except Exception as exc:
    relayed = None
    errors.append(f"relay: {type(exc).__name__}: {exc}"[:300])
print("RESULT " + json.dumps({"done": len(done), "errors": errors, "birthday": sum(given),
                               "relayed": relayed}))
"""


class PgBouncer:
    """PgBouncer on loopback in transaction pooling mode, two server connections."""

    def __init__(self, database: str):
        # A folder of its own that the postgres user owns (PgBouncer will not run as root).
        self.root = root = Path(tempfile.mkdtemp(prefix="coalition-pgbouncer-"))
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        config = root / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"pooled = host=127.0.0.1 port=5432 dbname={database} user=postgres\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            "auth_type = any\npool_mode = transaction\n"
            "default_pool_size = 2\nmin_pool_size = 0\nreserve_pool_size = 0\n"
            "max_client_conn = 200\n"
            f"logfile = {root / 'pgbouncer.log'}\npidfile = {root / 'pgbouncer.pid'}\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
        )
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.process = subprocess.Popen(
            [*as_postgres, pgbouncer_binary(), str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, timeout=30, process=self.process)

    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/pooled"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def pooled():
    """A database of its own, migrated directly, and PgBouncer in front of it."""
    name = f"coalition_pgbouncer_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect("postgres://postgres@127.0.0.1:5432/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    bouncer = None
    try:
        direct = project_env(DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{name}")
        manage("migrate", "--no-input", "-v0", env=direct, timeout=300)
        bouncer = PgBouncer(name)
        yield bouncer, direct
    finally:
        if bouncer is not None:
            bouncer.stop()
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _run(env: dict) -> dict:
    output = manage("shell", "-c", WORKLOAD, env=env, timeout=300)
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_every_write_path_works_through_transaction_pooling(pooled):
    bouncer, direct = pooled
    env = project_env(
        DATABASE_URL=bouncer.url(), DATABASE_TRANSACTION_POOLING="true", CONN_MAX_AGE="60"
    )
    env.pop("CELERY_BROKER_URL", None)  # follow-up work in-process: this is about the database
    env.pop("COALITION_PREPARED_STATEMENTS", None)

    # When six threads earn, burn, hold and capture through two shared server connections,
    # birthday bonuses walk 1,200 members with .iterator(), and the outbox relay runs
    started = time.monotonic()
    result = _run(env)

    # Then nothing failed, every step happened, and the ledger ties
    assert result["errors"] == []
    assert result["done"] == 6 * 25
    assert result["birthday"] == 1200
    assert result["relayed"] is not None
    assert "ledger ok" in manage("check_ledger", env=env)
    print(f"\npgbouncer: {result} in {time.monotonic() - started:.1f} s")
    with psycopg2.connect(direct["DATABASE_URL"]) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM coalition_transaction WHERE kind = 'burn'")
        assert cursor.fetchone()[0] == 2 * 6 * 25  # the burns and the captures


def test_prepared_statements_break_behind_transaction_pooling(pooled):
    # The control: the same work with the ledger's prepared statements on fails, so the
    # test above really ran its transactions on shared server connections.
    bouncer, _ = pooled
    env = project_env(
        DATABASE_URL=bouncer.url(),
        DATABASE_TRANSACTION_POOLING="true",
        COALITION_PREPARED_STATEMENTS="true",
        CONN_MAX_AGE="60",
    )
    env.pop("CELERY_BROKER_URL", None)
    result = _run(env)
    assert any("prepared statement" in error for error in result["errors"]), result
