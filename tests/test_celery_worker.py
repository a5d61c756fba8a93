"""The periodic ledger jobs on a real Celery worker: a subprocess consuming from Redis and
writing to the test database, as in production (not the eager in-process default)."""

import os
import re
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from celery.result import EagerResult
from django.db import connection
from django.utils import timezone

from coalition import selectors, tasks
from coalition.models import Account, RedemptionHold
from config.celery import app
from tests import factories

pytestmark = [
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]

PROJECT = Path(__file__).resolve().parent.parent
TIMEOUT = 30.0


def worker_database_url() -> str:
    """A DATABASE_URL for the worker that points at this run's test database."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "127.0.0.1"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{credentials}@{host}{port}/{db['NAME']}"


@pytest.fixture
def worker():
    """A real worker on a queue of its own, stopped at the end of the test."""
    queue = f"coalition-test-{uuid.uuid4().hex}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "CELERY_BROKER_URL": os.environ["CELERY_BROKER_URL"],
        "DATABASE_URL": worker_database_url(),
        "CONN_MAX_AGE": "0",
    }
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("celery")),
            "-A",
            "config",
            "worker",
            "--pool=solo",
            "-c",
            "1",
            "-Q",
            queue,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=INFO",
        ],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    process.queue = queue
    try:
        yield process
    finally:
        stop(process)


def stop(worker) -> str:
    """Stop the worker (warm shutdown) and return what it logged."""
    if worker.returncode is None:
        worker.terminate()
    try:
        output, _ = worker.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        worker.kill()
        output, _ = worker.communicate(timeout=5)
    except ValueError:  # already stopped and read
        output = ""
    return output or ""


@pytest.fixture
def non_eager():
    """Send tasks to the broker from this process (the test settings run them eagerly)."""
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    yield
    app.conf.task_always_eager = eager


def wait_for(condition, worker, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if condition():
            return
        if worker.poll() is not None:
            pytest.fail(f"the worker exited ({worker.returncode}):\n{stop(worker)}")
        time.sleep(0.2)
    pytest.fail(f"{what} did not happen within {TIMEOUT:.0f} s; worker output:\n{stop(worker)}")


def test_a_real_worker_expires_due_holds_and_due_points(worker, non_eager, member, partner):
    # Given a hold that fell due half an hour ago, a fresh hold, and a member whose only lot
    # expired a year ago
    factories.earn(member, partner, 500)
    now = timezone.now()
    fresh_hold = factories.hold(member, partner, 150)
    due_hold = factories.hold(member, partner, 200, now=now - timedelta(hours=1))
    lapsed = factories.member()
    factories.earn(lapsed, partner, 80, now=now - timedelta(days=3 * 365))
    assert selectors.member_balance(member=member).held == 350

    # When the hold expiry job is sent to the worker's queue through Redis
    sent = tasks.expire_due_holds.apply_async(queue=worker.queue)
    assert not isinstance(sent, EagerResult)

    # Then the worker expires the due hold and releases its points, leaving the fresh one
    wait_for(
        lambda: RedemptionHold.objects.get(pk=due_hold.pk).status == RedemptionHold.Status.EXPIRED,
        worker,
        "the due hold's expiry",
    )
    assert RedemptionHold.objects.get(pk=fresh_hold.pk).status == RedemptionHold.Status.ACTIVE
    assert selectors.member_balance(member=member) == selectors.Balance(
        balance=500, held=150, spendable=350
    )

    # When the lot expiry job is sent too
    tasks.expire_due_lots.apply_async(queue=worker.queue)

    # Then the lapsed member's points go to breakage, and nobody else's
    wait_for(
        lambda: selectors.member_balance(member=lapsed).balance == 0,
        worker,
        "the lapsed points' expiry",
    )
    breakage = Account.objects.get(kind=Account.Kind.BREAKAGE)
    assert selectors.account_balance(account_id=breakage.pk) == 80
    assert selectors.member_balance(member=member).balance == 500
    assert selectors.ledger_check().ok
    # And it was the worker process that ran both jobs
    output = stop(worker)
    assert re.search(r"Task coalition\.tasks\.expire_due_holds\[[\w-]+\] succeeded", output)
    assert re.search(r"Task coalition\.tasks\.expire_due_lots\[[\w-]+\] succeeded", output)
