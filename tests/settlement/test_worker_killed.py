"""A real Celery worker killed with SIGKILL in the middle of a settlement run (issue 9):
the worker is inside a Stripe call when it dies; a new worker resumes the run (as the
`resume_executing_runs` beat job does) and every line is paid exactly once.

Complements test_execution.py, which kills the executor in-process after each Stripe call:
here it is the whole process, its database connection and its unacknowledged task."""

from __future__ import annotations

import os
import time

import pytest

from settlement import services
from settlement.models import SettlementRun
from settlement.tasks import resume_executing_runs
from tests.reliability.conftest import (
    CeleryWorker,
    celery_broker,
    database_url_of_tests,
    project_env,
)
from tests.settlement.test_execution import assert_paid_exactly_once

pytestmark = [
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


def worker_env(stripe_bed) -> dict[str, str]:
    return project_env(
        DATABASE_URL=database_url_of_tests(),
        STRIPE_API_BASE=stripe_bed.emulator.url,
        STRIPE_API_KEY=stripe_bed.emulator.api_key,
        STRIPE_MAX_NETWORK_RETRIES="0",
        STRIPE_TIMEOUT_SECONDS="20",
        SETTLEMENT_MINIMUM="10.00",
    )


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_worker_killed_inside_a_stripe_call_pays_nothing_twice(
    stripe_bed, stripe_month, finance, tmp_path
):
    run = stripe_month["run"]
    emulator = stripe_bed.emulator
    # Stripe is slow to answer the first transfer: the worker will be inside that call.
    emulator.inject_fault("/v1/transfers", "timeout", delay_seconds=8)
    broker = os.environ["CELERY_BROKER_URL"]

    first = CeleryWorker(env=worker_env(stripe_bed), log=tmp_path / "worker-1.log")
    try:
        first.wait_ready()
        with celery_broker(broker, eager=False, queue=first.queue):
            services.run_execute(run=run, started_by=finance)  # the task is sent on commit
        # The fault is used up once the worker's transfer request reached Stripe.
        wait_for(lambda: not emulator.control.faults(), 30, "the worker to call Stripe")
        first.kill()
    finally:
        first.stop()
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.EXECUTING

    second = CeleryWorker(env=worker_env(stripe_bed), log=tmp_path / "worker-2.log")
    try:
        second.wait_ready()
        with celery_broker(broker, eager=False, queue=second.queue):
            assert resume_executing_runs() == 1  # what beat does every 10 minutes
        wait_for(
            lambda: SettlementRun.objects.get(pk=run.pk).status == SettlementRun.Status.COMPLETED,
            60,
            f"the run to complete:\n{(tmp_path / 'worker-2.log').read_text()[-3000:]}",
        )
    finally:
        second.stop()

    assert_paid_exactly_once(stripe_bed, run)
