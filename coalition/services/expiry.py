"""Expiry of due points into programme breakage, set-based, a chunk of members at a time.

One sweep walks the members with due points in member-id order (keyset), `batch_size`
members per database transaction. Per chunk, whatever the number of members:

1. list the next members with due points (outside the transaction, so no lock is held yet):
   fixed lifetime, members with an open lot whose expiry has passed (walks the
   `lot_member_open` index in member order); inactivity, wallets with points whose last
   activity is older than the programme's months;
2. lock their wallets in member-id order in one statement (as batch earns do: no deadlock
   with single writes, which lock one wallet, nor with batches or other sweeps);
   no SKIP LOCKED: a burn holds a wallet for milliseconds, so the sweep waits for it and
   no member is left for the next sweep;
3. under those locks, read what is due (`expiry_due`: one query over the chunk's open lots
   and wallets) — the one place that says how many points expire;
4. one EXPIRE transaction per member, its two entries (wallet −points, breakage +points)
   and the lots' `remaining`, in three statements (`_insert`: COPY on PostgreSQL), so the
   ledger triggers fire as for any posting (append-only, balance at commit, the wallet
   balance and overspending guard), then commit, without waiting for the disk
   (`_commit_without_waiting_for_disk`: a crash may undo the last chunks, never half of one,
   and the next sweep does them again).

While a sweep runs, the objects the process held before it are frozen out of Python's cyclic
garbage collector (`_collector_frozen`): a full collection walks every object of the process
and stops all its threads, a chunk holding its wallets included (70-120 ms in the benchmark's
process: the burns that waited longest waited for it).

A burn that wants a wallet of the chunk waits at most for the chunk's transaction; the chunk
size keeps that well under 100 ms (docs/performance.md, "Expiry at scale"). Two sweeps at
once lock the same wallets in the same order: the second one, once it has the locks, reads
the lots the first one already took, and writes nothing for those members.
"""

import gc
import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection, connections
from django.db.models import F
from django.utils import timezone

from ..lookups import array_literal
from ..models import Account, Entry, LedgerTransaction, PointLot, Programme
from .batch import TRANSACTION_COLUMNS, _insert
from .idempotency import in_callers_transaction, ledger_write
from .posting import add_months, programme_get, system_account_id

logger = logging.getLogger(__name__)

Kind = LedgerTransaction.Kind
CALLER = "system:expiry"
DEFAULT_CHUNK = 250


@dataclass
class DuePoints:
    """What expires from one member's wallet now: the points, and [[lot id, points taken],
    ...] from the lots that expire first."""

    member_id: int
    wallet_id: int
    points: int
    lots: list[list[int]]


def expiry_due(
    *, member_ids: Iterable[int], programme: Programme, now: datetime
) -> dict[int, DuePoints]:
    """How many points expire now from each of these members' wallets, and from which lots
    (members with nothing due are absent). The rule, in one place:

    - fixed lifetime: the open lots whose expiry has passed; inactivity: every open lot of
      a wallet whose last activity is at least the programme's months old;
    - never more than the wallet can spend (balance − held): points an active hold
      reserves, and wallets at zero or below, are left alone;
    - taken from the lots that expire first (by date, then by age), as a burn would.

    One query. The caller locks the wallets first when it acts on the answer.
    """
    member_ids = sorted(set(member_ids))
    if not member_ids or programme.expiry_policy == Programme.ExpiryPolicy.NONE:
        return {}
    adapt = connection.ops.adapt_datetimefield_value
    if programme.expiry_policy == Programme.ExpiryPolicy.FIXED:
        condition, moment = "l.expires_at <= %s", now
    else:
        condition = "a.last_activity_at <= %s"
        moment = add_months(now, -programme.expiry_months)
    members_sql, members_params = _in_members("l.member_id", member_ids)
    # Lots and wallets joined directly (not through the member), earliest expiry first. Only
    # fixed SQL text is formatted in; every value travels as a parameter.
    sql = (
        "SELECT l.member_id, l.id, l.remaining, a.id, a.balance, a.held "  # noqa: S608
        "FROM coalition_lot l JOIN coalition_account a "
        "  ON a.member_id = l.member_id AND a.kind = %s "
        f"WHERE {members_sql} AND l.remaining > 0 AND {condition} "
        "ORDER BY l.member_id, l.expires_at IS NULL, l.expires_at, l.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [Account.Kind.MEMBER_WALLET, *members_params, adapt(moment)])
        rows = cursor.fetchall()
    due: dict[int, DuePoints] = {}
    current: int | None = None
    to_take = 0
    for member_id, lot_id, remaining, wallet_id, balance, held in rows:
        if member_id != current:
            current = member_id
            to_take = max(balance - held, 0)
        if to_take <= 0:
            continue
        take = min(remaining, to_take)
        to_take -= take
        found = due.get(member_id)
        if found is None:
            due[member_id] = DuePoints(member_id, wallet_id, take, [[lot_id, take]])
        else:
            found.points += take
            found.lots.append([lot_id, take])
    return due


def _in_members(column: str, member_ids: list[int]) -> tuple[str, list]:
    """`column` is one of these members: one array parameter on PostgreSQL (a plan that does
    not depend on how many there are, and no planning of 1,000 literals), a list elsewhere."""
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s::bigint[])", [array_literal(member_ids)]
    return f"{column} IN ({', '.join(['%s'] * len(member_ids))})", list(member_ids)


def _wallets_lock(member_ids: list[int]) -> None:
    """Lock these members' wallets in member-id order, in one statement (as
    `wallets_lock_sorted` does for batch earns, but with one array parameter and without
    joining the members: at 1,000 members a chunk, the IN list of 1,000 literals and the
    join cost more than the lock itself). SQLite has no row locks: its writers are serial."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM coalition_account WHERE member_id = ANY(%s::bigint[]) "
            "AND kind = %s ORDER BY member_id FOR UPDATE",
            [array_literal(member_ids), Account.Kind.MEMBER_WALLET],
        )


def points_expire_due(
    *,
    now: datetime | None = None,
    batch_size: int = DEFAULT_CHUNK,
    workers: int | None = None,
) -> int:
    """Expire due points into programme breakage; returns how many points expired.

    Fixed lifetime: lots whose expiry has passed. Inactivity: every lot of a member whose
    last activity is older than the programme's months (a member active again since the
    chunk was listed is left alone). Points reserved by an active hold are left until the
    hold is resolved. Each member gets one EXPIRE transaction; `batch_size` members share a
    database transaction, so a sweep never blocks a member's burn for long; two sweeps at
    once do the work once.

    `workers` (default: settings.COALITION["EXPIRY_WORKERS"]) sweeps that many disjoint
    ranges of member ids at once, each on its own database connection (PostgreSQL; their
    wallets never overlap, so they never wait for each other). SQLite, or a call inside the
    caller's transaction, sweeps in one.
    """
    now = now or timezone.now()
    programme = programme_get()
    if programme.expiry_policy == Programme.ExpiryPolicy.NONE:
        return 0
    workers = workers or settings.COALITION.get("EXPIRY_WORKERS", 1)
    with _collector_frozen():
        if workers <= 1 or connection.vendor != "postgresql" or in_callers_transaction():
            # Inside a caller's transaction (an `atomic()`, or a connection the caller took
            # out of autocommit) the sweep stays in it: other connections would not see
            # what it has not committed.
            return _sweep(programme, now, batch_size, after=0, upto=None)
        return _sweep_ranges(programme, now, batch_size, workers)


def _sweep_ranges(programme: Programme, now: datetime, batch_size: int, workers: int) -> int:
    """Sweep `workers` disjoint ranges of member ids at once, a thread and a connection each."""
    first, last = _due_span(programme, now)
    if first is None:
        return 0
    step = (last - first) // workers + 1
    bounds = [(first - 1 + i * step, first - 1 + (i + 1) * step) for i in range(workers)]
    totals: list[int] = []
    errors: list[BaseException] = []

    def sweep(after: int, upto: int) -> None:
        try:
            totals.append(_sweep(programme, now, batch_size, after=after, upto=upto))
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller's thread
            errors.append(exc)
        finally:
            connections.close_all()  # this thread's own connection

    threads = [threading.Thread(target=sweep, args=bound) for bound in bounds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(totals)


_frozen_lock = threading.Lock()
_frozen_sweeps = 0
_thaw_after = True


@contextmanager
def _collector_frozen() -> Iterator[None]:
    """Leave the objects this process holds now out of every garbage collection until the
    sweep ends (`gc.freeze`).

    A chunk holds its members' wallets from the lock to the commit. Python's cyclic collector
    runs when allocations trigger it, in whichever thread allocates, and a full collection
    walks every object of the process with all its threads stopped: in the benchmark's
    process that took 70-120 ms, every few seconds, and the chunk caught in it held its
    wallets that much longer (the burns that waited longest, waited for it). Frozen, the
    process's existing objects (modules, caches, the caller's data) are not walked; what the
    sweep makes and drops is still collected, in a few milliseconds. Unreachable objects
    among the frozen ones are collected after the thaw. Sweeps overlapping in one process
    (threads) thaw when the last one ends; a process that had frozen objects itself before
    (a server that preloads and freezes) is left as it was: neither frozen again nor thawed.
    """
    global _frozen_sweeps, _thaw_after
    with _frozen_lock:
        if _frozen_sweeps == 0:
            # A process that froze its objects itself keeps its own freeze: freezing again
            # would move what it made since into the permanent generation for good (the
            # sweep would never thaw it), and a cycle among those would never be collected.
            _thaw_after = gc.get_freeze_count() == 0
            if _thaw_after:
                gc.freeze()
        _frozen_sweeps += 1
    try:
        yield
    finally:
        with _frozen_lock:
            _frozen_sweeps -= 1
            if _frozen_sweeps == 0 and _thaw_after:
                gc.unfreeze()


def _sweep(
    programme: Programme, now: datetime, batch_size: int, *, after: int, upto: int | None
) -> int:
    """Expire chunk by chunk the due members with ids in (after, upto]."""
    expired_total = 0
    while True:
        member_ids = _due_members(programme, now, after=after, limit=batch_size)
        if upto is not None:
            member_ids = [member_id for member_id in member_ids if member_id <= upto]
        if not member_ids:
            return expired_total
        expired_total += _expire_chunk(member_ids, programme, now)
        after = member_ids[-1]


def _due_span(programme: Programme, now: datetime) -> tuple[int | None, int | None]:
    """The lowest and highest member id that may have points to expire."""
    first = _due_members(programme, now, after=0, limit=1)
    if not first:
        return None, None
    if programme.expiry_policy == Programme.ExpiryPolicy.FIXED:
        candidates = PointLot.objects.filter(remaining__gt=0, expires_at__lte=now)
    else:
        inactive_since = add_months(now, -programme.expiry_months)
        candidates = Account.objects.filter(
            kind=Account.Kind.MEMBER_WALLET, balance__gt=0, last_activity_at__lte=inactive_since
        )
    last = candidates.order_by("-member_id").values_list("member_id", flat=True).first()
    return first[0], last


def _due_members(programme: Programme, now: datetime, *, after: int, limit: int) -> list[int]:
    """The next `limit` members (by id, after `after`) that may have points to expire."""
    if programme.expiry_policy == Programme.ExpiryPolicy.FIXED:
        candidates = PointLot.objects.filter(
            remaining__gt=0, expires_at__lte=now, member_id__gt=after
        ).values_list("member_id", flat=True)
    else:
        inactive_since = add_months(now, -programme.expiry_months)
        candidates = Account.objects.filter(
            kind=Account.Kind.MEMBER_WALLET,
            balance__gt=0,
            last_activity_at__lte=inactive_since,
            member_id__gt=after,
        ).values_list("member_id", flat=True)
    return list(candidates.order_by("member_id").distinct()[:limit])


@ledger_write
def _expire_chunk(member_ids: list[int], programme: Programme, now: datetime) -> int:
    """Expire what is due from these members, in one database transaction."""
    _commit_without_waiting_for_disk()
    _wallets_lock(member_ids)
    due = list(expiry_due(member_ids=member_ids, programme=programme, now=now).values())
    if not due:
        return 0
    # Made on first use; the chunk that makes it commits waiting for the disk, as any other
    # write does: the id the process remembers must name an account after a crash.
    breakage_id = system_account_id(Account.Kind.BREAKAGE, on_create=_commit_waiting_for_disk)
    txn_ids = _insert(
        LedgerTransaction,
        TRANSACTION_COLUMNS,
        [
            (
                Kind.EXPIRE,
                each.member_id,
                None,
                -each.points,
                "",
                CALLER,
                None,
                "",
                None,
                "",
                now,
                {"lots": each.lots, "policy": programme.expiry_policy},
            )
            for each in due
        ],
        returning=True,
    )
    entries: list[tuple[int, int, int]] = []
    for each, txn_id in zip(due, txn_ids, strict=True):
        # The legs in the order `_post` writes them: the wallet, then breakage.
        entries.append((txn_id, each.wallet_id, -each.points))
        entries.append((txn_id, breakage_id, each.points))
    _insert(Entry, ["transaction_id", "account_id", "points"], entries)
    _lots_take([taken for each in due for taken in each.lots])
    return sum(each.points for each in due)


def _commit_without_waiting_for_disk() -> None:
    """This chunk's commit releases its wallets as soon as it is in the WAL buffers, not
    after the WAL flush (`synchronous_commit = off`, for this transaction only).

    The flush is the one part of a chunk that the chunk does not control: on this box a
    commit usually waits 1-5 ms for it, but 50-800 ms when a checkpoint or the kernel's
    writeback has the disk, and all that time a burn waits for a wallet of the chunk. An
    asynchronous commit is still atomic and in order; a crash can lose only the last
    fraction of a second of committed chunks (wal_writer_delay, 200 ms, three times at
    most), and losing them is harmless: the database comes back as if they had not run,
    consistent, and the next sweep expires those points (tests/reliability/test_crash.py).
    Nothing outside the database acts on an expiry (no webhook, no mail, no outbox row; a
    member who read the lower balance in between reads it again once the next sweep has
    run); a write that read one and committed (a burn, a settlement claim) flushed the WAL
    up to its own commit, so the expiry it read is on disk before it is; and a chunk
    creates nothing that the process remembers unless it waits for the disk (the chunk that
    makes the breakage account commits as every other write does).

    Only when the chunk is its own transaction: inside a caller's transaction (an outer
    `atomic()`, or a connection the caller took out of autocommit, where the chunk's
    `atomic()` is a savepoint and the commit is the caller's) the setting would apply to
    the caller's writes too.
    """
    _synchronous_commit(wait_for_disk=False)


def _commit_waiting_for_disk() -> None:
    """This chunk's commit waits for the WAL flush after all (undoes the above)."""
    _synchronous_commit(wait_for_disk=True)


def _synchronous_commit(*, wait_for_disk: bool) -> None:
    """SET LOCAL synchronous_commit, when the chunk is its own transaction on PostgreSQL."""
    if (
        connection.vendor != "postgresql"
        or len(connection.atomic_blocks) != 1
        or not connection.commit_on_exit
    ):
        return
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL synchronous_commit = {'on' if wait_for_disk else 'off'}")


def _lots_take(taken: list[list[int]]) -> None:
    """Reduce the lots' remaining points by what was taken ([[lot id, points], ...])."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE coalition_lot AS l SET remaining = l.remaining - t.take "
                "FROM unnest(%s::bigint[], %s::bigint[]) AS t(id, take) WHERE l.id = t.id",
                [
                    array_literal([lot_id for lot_id, _ in taken]),
                    array_literal([take for _, take in taken]),
                ],
            )
        return
    for lot_id, take in taken:
        PointLot.objects.filter(pk=lot_id).update(remaining=F("remaining") - take)
