"""The transactional outbox: follow-up work of a write, recorded in the write's own database
transaction and dispatched after it commits.

Why. A write that schedules its follow-up with `transaction.on_commit(task.delay)` loses it
when the broker is down at that moment (or the process dies between the commit and the
publish). Here the follow-up is a row (`OutboxMessage`) committed with the write: it exists
if and only if the write committed, and it stays until a relay has dispatched it.

Recording. `outbox_enqueue(topic, payload)` inserts one row — nothing else, no lock — and
asks, once per database transaction, for a relay run after the commit (the "nudge": a Celery
task sent with `retry=False`, so a broker outage costs the write nothing; the beat entry
`relay-outbox`, every few seconds, picks the row up later).

Dispatch. `outbox_relay(batch)` takes undispatched rows in id order with
`SELECT … FOR UPDATE SKIP LOCKED`, calls the handler registered for each row's topic inside a
savepoint, and marks the row dispatched in the same transaction. Only one relay dispatches at
a time (a transaction-level PostgreSQL advisory lock, `pg_try_advisory_xact_lock`, taken by
each batch's transaction and released by its commit, so it works behind PgBouncer in
transaction pooling mode; others return at once), so rows are handled in id order —
partner webhooks rely on it to number events per partner. A handler that raises leaves its
row pending with `attempts`, `last_error` and a backoff; a broker outage (kombu
OperationalError, connection refused) stops the batch, since every later row would fail the
same way, and the rows wait for the next run without backoff.

Delivery is at least once: a relay that dies after a handler ran but before its commit runs
that handler again. Handlers are idempotent (a task is told what to do by ids; webhook
delivery is deduplicated per event and endpoint).

Handlers. A topic maps to a callable `handler(payload: dict) -> None`, registered with
`outbox_handler_register(topic, handler)` (from an AppConfig.ready) or by dotted path in
`settings.OUTBOX_HANDLERS`. Built in: `celery.task`, payload
`{"task": name, "args": [...], "kwargs": {...}}`, which sends that Celery task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from .models import OutboxMessage

logger = logging.getLogger(__name__)

CELERY_TASK = "celery.task"
RELAY_TASK = "coalition.tasks.relay_outbox"
# Any constant: the key of the PostgreSQL advisory lock only one relay holds at a time.
RELAY_LOCK_KEY = 7_201_909
DEFAULT_BATCH = 200
LONGEST_BACKOFF = timedelta(minutes=10)

Handler = Callable[[dict], None]
_handlers: dict[str, Handler] = {}


class BrokerUnavailable(Exception):
    """The message broker could not be reached: every later row would fail the same way."""


# --------------------------------------------------------------------------- handlers


def outbox_handler_register(topic: str, handler: Handler) -> None:
    """Handle rows of `topic` with `handler(payload)` (an AppConfig.ready calls this)."""
    _handlers[topic] = handler


def outbox_handler(topic: str) -> Handler:
    """The handler of a topic: registered, or named in settings.OUTBOX_HANDLERS."""
    if topic in _handlers:
        return _handlers[topic]
    dotted = {CELERY_TASK: "coalition.outbox.celery_task_send"} | dict(
        getattr(settings, "OUTBOX_HANDLERS", {})
    )
    if topic not in dotted:
        raise LookupError(f"no outbox handler for topic {topic!r}")
    handler = import_string(dotted[topic])
    _handlers[topic] = handler
    return handler


def _broker_errors() -> tuple[type[BaseException], ...]:
    from kombu.exceptions import OperationalError as KombuOperationalError

    return (KombuOperationalError, ConnectionError, BrokerUnavailable)


def _task(name: str):
    """A Celery task by name; the project names its tasks by their dotted path, so one not
    imported yet in this process is found by importing it."""
    from celery import current_app

    try:
        return current_app.tasks[name]
    except KeyError:
        return import_string(name)


def celery_task_send(payload: dict) -> None:
    """Send the Celery task a `celery.task` row names (run in-process in eager mode)."""
    task = _task(payload["task"])
    task.apply_async(
        args=payload.get("args") or (), kwargs=payload.get("kwargs") or {}, retry=False
    )


# --------------------------------------------------------------------------- recording


def outbox_enqueue(topic: str, payload: dict[str, Any]) -> OutboxMessage:
    """Record follow-up work in the caller's database transaction; it is dispatched after
    the commit (at once if the broker answers, else by the next relay run). Outside a
    transaction the row commits at once."""
    outbox_handler(topic)  # an unknown topic is a programming error: fail the write now
    message = OutboxMessage.objects.create(topic=topic, payload=payload)
    _nudge_after_commit()
    return message


def celery_task_enqueue(task_name: str, *args: Any, **kwargs: Any) -> OutboxMessage:
    """Send a Celery task once the caller's transaction commits, surviving a broker outage."""
    return outbox_enqueue(CELERY_TASK, {"task": task_name, "args": list(args), "kwargs": kwargs})


def celery_tasks_enqueue(task_name: str, calls: list[tuple]) -> list[OutboxMessage]:
    """`celery_task_enqueue` of one task for each tuple of positional arguments in `calls`,
    in one INSERT (a file of a million purchases is a thousand chunk tasks: one statement,
    not a thousand). Dispatched in the order of `calls`."""
    outbox_handler(CELERY_TASK)
    messages = OutboxMessage.objects.bulk_create(
        [
            OutboxMessage(
                topic=CELERY_TASK, payload={"task": task_name, "args": list(args), "kwargs": {}}
            )
            for args in calls
        ]
    )
    if messages:
        _nudge_after_commit()
    return messages


def _new_nudge() -> Callable[[], None]:
    """An on-commit callback asking for a relay run."""

    def outbox_nudge_on_commit() -> None:
        outbox_nudge_on_commit.ran = True
        outbox_nudge()

    outbox_nudge_on_commit.ran = False
    outbox_nudge_on_commit.is_outbox_nudge = True
    return outbox_nudge_on_commit


def _nudge_after_commit() -> None:
    """One nudge per database transaction: none is added when one already waits for the
    same commit and is rolled back with this row if it is (its savepoints enclose ours)."""
    if connection.in_atomic_block:
        savepoints = set(connection.savepoint_ids)
        for sids, callback, _robust in reversed(connection.run_on_commit):
            if getattr(callback, "is_outbox_nudge", False) and not callback.ran:
                if sids <= savepoints:
                    return
    transaction.on_commit(_new_nudge(), robust=True)


def outbox_nudge() -> None:
    """Ask a worker for a relay run now (in-process in eager mode). A broker outage is
    logged, not raised: the rows are committed and the periodic relay will take them."""
    try:
        _task(RELAY_TASK).apply_async(retry=False)
    except _broker_errors() as exc:
        logger.warning("outbox: broker unavailable, relay left to the beat: %s", exc)


# --------------------------------------------------------------------------- relay


def retry_delay(attempts: int) -> timedelta:
    """Backoff after a handler failed `attempts` times: 2 s, 4, 8, … at most 10 min."""
    return min(timedelta(seconds=2 ** min(attempts, 20)), LONGEST_BACKOFF)


def outbox_relay(batch: int = DEFAULT_BATCH, *, now: datetime | None = None) -> int:
    """Dispatch the due rows in id order, each at most once. Returns how many were
    dispatched. Returns at once while another relay is dispatching (it drains the rows).

    Each batch is one database transaction that first takes a transaction-level advisory
    lock (`pg_try_advisory_xact_lock`): it is released by the commit or rollback itself, so
    it holds behind PgBouncer in transaction pooling mode, where a session-level lock could
    be taken on one server connection and "released" on another. The rows are claimed
    `FOR UPDATE SKIP LOCKED` as well, and a claimed row is marked dispatched in the batch's
    own transaction, so two relays never dispatch the same row."""
    dispatched = 0
    last_id = 0
    while True:
        count, claimed_up_to, stopped = _relay_batch(batch, now=now, after_id=last_id)
        dispatched += count
        if stopped:  # the broker is unreachable, or another relay holds the lock
            return dispatched
        if claimed_up_to is not None:
            last_id = claimed_up_to
            continue
        # Nothing left. A nudge refused while our last batch held the lock may have
        # committed rows that batch did not see: look again now that the commit released
        # the lock, so no committed row waits for the beat.
        if not _due(now).filter(id__gt=last_id).exists():
            return dispatched


def _due(now: datetime | None):
    moment = now or timezone.now()
    return OutboxMessage.objects.filter(dispatched_at__isnull=True).exclude(
        next_attempt_at__gt=moment
    )


def _relay_batch(
    batch: int, *, now: datetime | None, after_id: int
) -> tuple[int, int | None, bool]:
    """One transaction: claim up to `batch` due rows after `after_id`, run their handlers,
    mark them. Returns (rows dispatched, last id claimed or None, stop: the broker is
    unreachable or another relay holds the lock)."""
    dispatched = 0
    with transaction.atomic():
        if not _relay_lock():
            return 0, None, True  # another relay is dispatching: it drains the rows
        claim = _due(now).filter(id__gt=after_id).select_for_update(skip_locked=True)
        rows = list(claim.order_by("id")[:batch])
        if not rows:
            return 0, None, False
        for row in rows:
            try:
                with transaction.atomic():
                    outbox_handler(row.topic)(row.payload)
            except _broker_errors() as exc:
                _failed(row, exc, now=now, backoff=False)
                return dispatched, row.pk, True
            except Exception as exc:  # noqa: BLE001 - recorded on the row and logged
                logger.exception("outbox #%s (%s) failed", row.pk, row.topic)
                _failed(row, exc, now=now, backoff=True)
                continue
            row.dispatched_at = timezone.now()
            row.attempts += 1
            row.save(update_fields=["dispatched_at", "attempts"])
            dispatched += 1
    return dispatched, rows[-1].pk, False


def _failed(row: OutboxMessage, exc: BaseException, *, now: datetime | None, backoff: bool) -> None:
    row.attempts += 1
    row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
    moment = now or timezone.now()
    row.next_attempt_at = moment + retry_delay(row.attempts) if backoff else None
    row.save(update_fields=["attempts", "last_error", "next_attempt_at"])


def _relay_lock() -> bool:
    """Take the relay's lock for the current database transaction (released by its commit
    or rollback: no unlock to forget, and safe behind a transaction-pooling PgBouncer)."""
    if connection.vendor != "postgresql":
        return True  # the embedded SQLite demo: one process, one writer
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [RELAY_LOCK_KEY])
        return bool(cursor.fetchone()[0])


def outbox_purge(*, older_than: timedelta = timedelta(days=7)) -> int:
    """Delete rows dispatched longer ago than `older_than`. Returns how many."""
    cutoff = timezone.now() - older_than
    deleted, _ = OutboxMessage.objects.filter(dispatched_at__lt=cutoff).delete()
    return deleted


def outbox_pending_count() -> int:
    """Rows not yet dispatched (a health figure: it grows while the broker is down)."""
    return OutboxMessage.objects.filter(dispatched_at__isnull=True).count()
