"""Read replicas, opt-in: reads inside `replica_reads()` go to the "replica" database.

Disabled unless REPLICA_DATABASE_URL is set (config/settings/base.py then adds the "replica"
alias and this router). Even then nothing moves by itself: only code that asks for it, for
reads that tolerate replication lag (reports, statements, a member's older history), e.g.

    with replica_reads():
        rows = list(LedgerTransaction.objects.filter(member_id=...)[:20])

Never inside a transaction on the primary (a read there must see that transaction's own
writes), never for writes, and migrations run on the primary only.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

from django.conf import settings
from django.db import connections

REPLICA = "replica"
_use_replica: ContextVar[bool] = ContextVar("coalition_replica_reads", default=False)


@contextmanager
def replica_reads():
    token = _use_replica.set(True)
    try:
        yield
    finally:
        _use_replica.reset(token)


class ReplicaRouter:
    def db_for_read(self, model, **hints):
        if not _use_replica.get() or REPLICA not in settings.DATABASES:
            return None
        if connections["default"].in_atomic_block:
            return None
        return REPLICA

    def db_for_write(self, model, **hints):
        return "default"

    def allow_relation(self, obj1, obj2, **hints):
        return True  # the replica holds the same rows as the primary

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db != REPLICA
