"""Idempotency keys and the retry wrapper every ledger write runs in."""

import functools
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction

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
IDEMPOTENCY_CONSTRAINTS = frozenset(
    {"transaction_idempotency_unique", "hold_idempotency_unique", "idempotency_record_unique"}
)

T = TypeVar("T")


# --------------------------------------------------------------------------- plumbing


def _setting(name: str) -> Any:
    return settings.COALITION[name]


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(exc.__cause__, "pgcode", None)


def _is_idempotency_race(exc: IntegrityError) -> bool:
    diag = getattr(exc.__cause__, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    if constraint:
        return constraint in IDEMPOTENCY_CONSTRAINTS
    # SQLite names the columns, not the constraint.
    return "idempotency_key" in str(exc)


def ledger_write(fn: Callable[..., T]) -> Callable[..., T]:
    """Run a write in its own database transaction, retrying what is safe to retry.

    A deadlock, serialization failure or lock timeout is retried with jittered backoff. A
    unique-key violation on an idempotency key means a concurrent request with the same key
    committed first: one retry then finds and replays (or refuses) that first result.
    Called inside an outer transaction, the write runs in a savepoint and is not retried:
    the outer transaction is the caller's to retry.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        if connection.in_atomic_block:
            with transaction.atomic():
                return fn(*args, **kwargs)
        retries = _setting("WRITE_RETRIES")
        idempotency_retried = False
        attempt = 0
        while True:
            try:
                with transaction.atomic():
                    return fn(*args, **kwargs)
            except OperationalError as exc:
                if attempt >= retries or _sqlstate(exc) not in RETRYABLE_SQLSTATES:
                    raise
                logger.info("retrying %s after %s", fn.__name__, _sqlstate(exc))
            except IntegrityError as exc:
                if idempotency_retried or not _is_idempotency_race(exc):
                    raise
                idempotency_retried = True
            attempt += 1
            time.sleep(random.uniform(0, min(0.25, 0.005 * 2**attempt)))

    return wrapper


def request_fingerprint(operation: str, **payload: Any) -> str:
    """A stable hash of what the caller asked for, to tell a retry from a different request."""
    body = json.dumps(
        {"operation": operation, **payload}, sort_keys=True, default=str, separators=(",", ":")
    )
    return hashlib.sha256(body.encode()).hexdigest()


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
        raise IdempotencyConflict(
            "This idempotency key was already used for a different request",
            field="idempotencyKey",
        )
    existing.replayed = True
    return existing


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
        raise IdempotencyConflict(
            "This idempotency key was already used for a different request",
            field="idempotencyKey",
        )
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
