"""Idempotency keys and the retry wrapper every ledger write runs in."""

import functools
import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction

from ..errors import (
    IdempotencyConflict,
)
from ..models import (
    IdempotencyRecord,
    LedgerTransaction,
)

logger = logging.getLogger(__name__)

Kind = LedgerTransaction.Kind
MAX_TEXT_LENGTH = 255
# PostgreSQL: serialization failure, deadlock detected, lock not available.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
# PostgreSQL: the server ended the session (admin shutdown, crash shutdown, cannot connect now).
CONNECTION_LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
IDEMPOTENCY_CONSTRAINTS = frozenset(
    {"transaction_idempotency_unique", "hold_idempotency_unique", "idempotency_record_unique"}
)

# The database's rule that a key is unique per caller across transactions, holds and
# recorded writes (migration 0012): a key used for one kind of write, sent with another.
KEY_PER_CALLER = "idempotency_key_per_caller"
KEY_USED_ELSEWHERE = "This idempotency key was already used for a different request"

T = TypeVar("T")


# --------------------------------------------------------------------------- plumbing


def _setting(name: str) -> Any:
    return settings.COALITION[name]


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(exc.__cause__, "pgcode", None)


def _constraint(exc: IntegrityError) -> str | None:
    return getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None)


def _is_key_used_elsewhere(exc: IntegrityError) -> bool:
    """Did the database refuse a key this caller used for another kind of write?"""
    constraint = _constraint(exc)
    if constraint:
        return constraint == KEY_PER_CALLER
    return str(exc).startswith(KEY_PER_CALLER)  # SQLite's trigger says it first


def _is_idempotency_race(exc: IntegrityError) -> bool:
    constraint = _constraint(exc)
    if constraint:
        return constraint in IDEMPOTENCY_CONSTRAINTS
    # SQLite names the columns, not the constraint.
    return "idempotency_key" in str(exc) and not _is_key_used_elsewhere(exc)


def _key_used_elsewhere_error() -> IdempotencyConflict:
    return IdempotencyConflict(KEY_USED_ELSEWHERE, field="idempotencyKey")


@contextmanager
def _key_conflicts_refused() -> Iterator[None]:
    """A key the caller already used for another kind of write is the caller's error,
    unless an outer ledger write will retry (its look-ups then refuse just that write)."""
    try:
        yield
    except IntegrityError as exc:
        if _is_key_used_elsewhere(exc) and not getattr(_writing, "outer", False):
            raise _key_used_elsewhere_error() from exc
        raise


def in_callers_transaction() -> bool:
    """Is the default connection in a transaction of the caller's: an `atomic()` block, or
    taken out of autocommit by the caller (whose commit then decides)?"""
    return connection.in_atomic_block or not connection.get_autocommit()


# Set while an outermost ledger write runs in this thread: the one that retries.
_writing = threading.local()


def connection_lost(exc: BaseException) -> bool:
    """Did the database connection break (network, server restart, session terminated)?

    psycopg2 reports a dead socket as OperationalError or InterfaceError without a SQLSTATE;
    a server that ends the session says 57P01-57P03. (SQLite has no SQLSTATEs and no
    connection to lose: never.)
    """
    if connection.vendor != "postgresql":
        return False
    if isinstance(exc, InterfaceError):
        return True
    if isinstance(exc, OperationalError):
        sqlstate = _sqlstate(exc)
        return (
            sqlstate is None or sqlstate.startswith("08") or sqlstate in CONNECTION_LOST_SQLSTATES
        )
    return False


def _discard_broken_connection() -> None:
    """Drop the connection if it is broken, so the next attempt opens a fresh one."""
    if connection.connection is not None and not connection.is_usable():
        connection.close()


def ledger_write(fn: Callable[..., T]) -> Callable[..., T]:
    """Run a write in its own database transaction, retrying what is safe to retry.

    - A deadlock, serialization failure or lock timeout is retried with jittered backoff:
      the server rolled the transaction back.
    - A lost connection (network, database restart) is retried on a fresh connection when
      it broke *before* the commit was sent: the server rolls an unfinished transaction
      back, so nothing was written. When it broke *during* the commit nobody can tell
      whether the commit happened; the write is then retried only if it carries an
      idempotency key, because the retry finds a committed first attempt by its key and
      replays it (the same result, no second posting). A write without a key re-raises.
    - A unique-key violation on an idempotency key means a concurrent request with the same
      key committed first: one retry then finds and replays (or refuses) that first result.
    - So does the database's refusal of a key the caller used for another kind of write
      (`idempotency_key_per_caller`): a hold or a recorded write under one of the keys
      committed after this write looked. One retry looks again and refuses just that
      write (a batch: just that row, the others are posted); a second refusal is the
      caller's IdempotencyConflict.

    Called inside an outer transaction (or on a connection the caller took out of
    autocommit), the write runs in a savepoint and is not retried: the outer transaction is
    the caller's to retry.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        if in_callers_transaction():
            # A savepoint, and the caller's to retry.
            with _key_conflicts_refused(), transaction.atomic():
                return fn(*args, **kwargs)
        retries = _setting("WRITE_RETRIES")
        idempotency_retried = key_retried = False
        attempt = 0
        while True:
            committing = False
            try:
                with transaction.atomic():
                    # Only around `fn`: on-commit callbacks, which run in the atomic block's
                    # exit, are writes of their own.
                    _writing.outer = True
                    try:
                        result = fn(*args, **kwargs)
                    finally:
                        _writing.outer = False
                    committing = True  # what fails from here on failed in the commit
                return result
            except (OperationalError, InterfaceError) as exc:
                if attempt >= retries:
                    raise
                if _sqlstate(exc) in RETRYABLE_SQLSTATES:
                    logger.info("retrying %s after %s", fn.__name__, _sqlstate(exc))
                elif connection_lost(exc) and (
                    not committing or kwargs.get("idempotency_key") is not None
                ):
                    logger.warning(
                        "retrying %s on a new connection: lost %s the commit (%s)",
                        fn.__name__,
                        "during" if committing else "before",
                        type(exc).__name__,
                    )
                    _discard_broken_connection()
                else:
                    raise
            except IntegrityError as exc:
                if committing:
                    raise  # from the commit or after it: never run a committed write again
                if _is_key_used_elsewhere(exc):
                    if key_retried:
                        raise _key_used_elsewhere_error() from exc
                    key_retried = True
                elif idempotency_retried or not _is_idempotency_race(exc):
                    raise
                else:
                    idempotency_retried = True
            attempt += 1
            time.sleep(random.uniform(0, min(0.25, 0.005 * 2**attempt)))

    return wrapper


# `json.dumps(…, sort_keys=True, default=str, separators=(",", ":"))`, without building an
# encoder for every fingerprint (the encoder keeps no state between calls).
_FINGERPRINT_ENCODE = json.JSONEncoder(sort_keys=True, default=str, separators=(",", ":")).encode


def request_fingerprint(operation: str, **payload: Any) -> str:
    """A stable hash of what the caller asked for, to tell a retry from a different request."""
    payload["operation"] = operation  # `payload` is this call's own dict
    return hashlib.sha256(_FINGERPRINT_ENCODE(payload).encode()).hexdigest()


def transaction_replay(
    *, caller: str, idempotency_key: str | None, request_hash: str
) -> LedgerTransaction | None:
    """The transaction this caller already wrote under this key, if any.

    Raises IdempotencyConflict when the key was used for a different request.
    """
    if idempotency_key is None:
        return None
    existing = LedgerTransaction.objects.filter(
        caller=caller, idempotency_key=idempotency_key
    ).first()
    if existing is None:
        return None
    if existing.request_hash != request_hash:
        raise IdempotencyConflict(KEY_USED_ELSEWHERE, field="idempotencyKey")
    existing.replayed = True
    return existing


_KEY_USED_SQL = (
    "SELECT EXISTS (SELECT 1 FROM coalition_transaction"
    " WHERE caller = %s AND idempotency_key = %s)"
    " OR EXISTS (SELECT 1 FROM coalition_idempotency WHERE caller = %s AND idempotency_key = %s)"
)


def idempotency_key_used(*, caller: str, idempotency_key: str) -> bool:
    """Has this caller written anything under this key (a ledger transaction or another
    write)? One index probe per table in one round trip: the cheap test a write runs before
    loading what it would replay."""
    with connection.cursor() as cursor:
        cursor.execute(_KEY_USED_SQL, [caller, idempotency_key, caller, idempotency_key])
        return bool(cursor.fetchone()[0])


def idempotency_replay(
    *, caller: str, idempotency_key: str, operation: str, request_hash: str
) -> IdempotencyRecord | None:
    """The record of a non-ledger write this caller already made under this key, if any."""
    record = IdempotencyRecord.objects.filter(
        caller=caller, idempotency_key=idempotency_key
    ).first()
    if record is None:
        return None
    if record.operation != operation or record.request_hash != request_hash:
        raise IdempotencyConflict(KEY_USED_ELSEWHERE, field="idempotencyKey")
    return record


def idempotency_record(
    *, caller: str, idempotency_key: str, operation: str, request_hash: str, result_id: int | None
) -> IdempotencyRecord:
    """Remember the result of a non-ledger write (in the same database transaction)."""
    return IdempotencyRecord.objects.create(
        caller=caller,
        idempotency_key=idempotency_key,
        operation=operation,
        request_hash=request_hash,
        result_id=result_id,
    )
