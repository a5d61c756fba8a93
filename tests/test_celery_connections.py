"""Celery workers keep their database connection from task to task (CELERY_DB_REUSE_MAX),
under Django's own rules (config/celery.py): a connection past CONN_MAX_AGE, or left
unusable, is closed before the next task, as Django does between web requests."""

import time

import pytest
from celery.fixups.django import DjangoWorkerFixup
from celery.signals import task_postrun, task_prerun
from django.db import connection

from coalition.tasks import relay_outbox
from config.celery import app

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def run_task_signals(task) -> None:
    """What a worker does around a task: Celery's Django fixup, then the signals."""
    fixup = DjangoWorkerFixup(app)
    fixup.on_task_prerun(sender=task)
    task_prerun.send(sender=task, task_id="t", task=task, args=(), kwargs={})
    fixup.on_task_postrun(sender=task)
    task_postrun.send(sender=task, task_id="t", task=task, args=(), kwargs={}, retval=None)


def test_a_worker_keeps_a_good_connection_from_one_task_to_the_next():
    # Given the project's setting, and a worker's open connection well within CONN_MAX_AGE
    assert app.conf.get("CELERY_DB_REUSE_MAX") == 1000
    connection.close()
    connection.ensure_connection()
    connection.close_at = time.monotonic() + 60
    raw = connection.connection
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (backend,) = cursor.fetchone()

    # When two tasks run
    run_task_signals(relay_outbox)
    run_task_signals(relay_outbox)

    # Then the same server connection served them (no new backend per task)
    assert connection.connection is raw
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone() == (backend,)


def test_a_connection_past_its_age_is_closed_before_the_next_task():
    # Given a worker's connection older than CONN_MAX_AGE
    connection.ensure_connection()
    connection.close_at = time.monotonic() - 1

    # When a task starts
    run_task_signals(relay_outbox)

    # Then it was closed (the task's first query opens a fresh one)
    assert connection.connection is None
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
