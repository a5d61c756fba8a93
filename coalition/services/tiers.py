"""Coalition-wide tiers: upgrade at once on the earn that crosses a threshold, downgrade only
at the nightly recalculation and only after the programme's grace period below it."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from ..models import LedgerTransaction, Member, MemberTier, Tier, TierChange
from .posting import _lock_wallets, programme_get

Kind = LedgerTransaction.Kind
QUALIFYING_WINDOW = timedelta(days=365)


_tiers_cache: list = []  # [(read at, [Tier, ...])]


def tiers_ordered() -> list[Tier]:
    """The tiers, lowest first; cached for a few seconds per process (read on every earn)."""
    from .posting import CACHE_SECONDS

    if _tiers_cache and time.monotonic() - _tiers_cache[0][0] < CACHE_SECONDS:
        return _tiers_cache[0][1]
    tiers = list(Tier.objects.order_by("qualifying_points"))
    _tiers_cache[:] = [(time.monotonic(), tiers)]
    return tiers


def tiers_cache_clear() -> None:
    _tiers_cache.clear()


def qualifying_points(*, member: Member, now: datetime | None = None) -> int:
    """Points earned across all partners in the last 12 months, less their reversals.

    Burns, donations and expiry don't lower them.
    """
    now = now or timezone.now()
    earned = LedgerTransaction.objects.filter(member=member).filter(qualifying(now))
    return earned.aggregate(total=Sum("member_points"))["total"] or 0


def qualifying(now: datetime) -> Q:
    """The transactions that make qualifying points at `now`: earns and bonuses of the last
    12 months, and the reversals of those (a refund of an earn from before the window
    takes nothing away: that earn no longer counts)."""
    since = now - QUALIFYING_WINDOW
    return Q(created_at__gt=since, created_at__lte=now) & (
        Q(kind__in=[Kind.EARN, Kind.BONUS])
        | Q(
            kind=Kind.REVERSAL,
            reversal_of__kind__in=[Kind.EARN, Kind.BONUS],
            reversal_of__created_at__gt=since,
        )
    )


def tier_for_points(tiers: list[Tier], points: int) -> Tier | None:
    reached = [tier for tier in tiers if tier.qualifying_points <= points]
    return reached[-1] if reached else None


def member_tier(*, member: Member) -> Tier | None:
    """The member's current tier (the base tier when none was recorded yet)."""
    state = MemberTier.objects.select_related("tier").filter(member=member).first()
    if state is not None:
        return state.tier
    tiers = tiers_ordered()
    return tiers[0] if tiers else None


def _change(member, state, new_tier, points, reason, now, from_tier=None) -> TierChange:
    # A member with no recorded state is in the base tier: the history says so.
    old_tier = state.tier if state else from_tier
    if state is None:
        state = MemberTier(member=member)
    state.tier = new_tier
    state.since = now
    state.below_since = None
    state.save()
    change = TierChange.objects.create(
        member=member,
        from_tier=old_tier,
        to_tier=new_tier,
        qualifying_points=points,
        reason=reason,
        created_at=now,
    )
    # Through the outbox (issue 9): committed with the change, sent even if the broker is down.
    from ..outbox import celery_task_enqueue

    celery_task_enqueue("coalition.tasks.notify_tier_change", change.pk)
    return change


def member_tier_upgrade(*, member: Member, now: datetime | None = None) -> TierChange | None:
    """After an earn: move the member up at once if their qualifying points crossed a
    threshold. Never moves down (that waits for the nightly recalculation)."""
    tiers = tiers_ordered()
    if len(tiers) < 2:
        return None
    state = MemberTier.objects.select_related("tier").filter(member=member).first()
    current = state.tier if state else tiers[0]
    if current.pk == tiers[-1].pk and state.below_since is None:
        # At the top with no grace period running: nothing to move, so the member's 12
        # months of earns (the members who earn most have the most) are not summed.
        return None
    now = now or timezone.now()
    points = qualifying_points(member=member, now=now)
    reached = tier_for_points(tiers, points)
    if reached is None or reached.qualifying_points <= current.qualifying_points:
        if state and state.below_since and points >= current.qualifying_points:
            state.below_since = None
            state.save(update_fields=["below_since"])
        return None
    return _change(member, state, reached, points, "earn", now, from_tier=current)


# The nightly recalculation works in member-id order, a chunk per database transaction, and
# a task run stops taking chunks after its budget (well inside the 14-minute soft limit): the
# run that stops enqueues the next one from where it got to, so a night always finishes.
RECALCULATION_CHUNK = 500
RECALCULATION_BUDGET = timedelta(minutes=5)
RECALCULATION_TASK = "coalition.tasks.recalculate_tiers"


@dataclass
class TiersRecalculation:
    """What one run of the recalculation did, and the member id it stopped after (None: it
    reached the last member)."""

    counts: dict[str, int] = field(
        default_factory=lambda: {"downgraded": 0, "marked": 0, "cleared": 0}
    )
    resume_after: int | None = None


def tiers_recalculate(*, now: datetime | None = None) -> dict[str, int]:
    """The nightly recalculation for every member at once (no time budget): members below
    their tier's threshold are marked, and moved down once they have stayed below it for
    the programme's grace period. Returns the counts."""
    return tiers_recalculate_chunks(now=now or timezone.now(), budget=None).counts


def tiers_recalculate_chunks(
    *,
    now: datetime,
    after_member_id: int = 0,
    budget: timedelta | None,
    chunk_size: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> TiersRecalculation:
    """The nightly recalculation (as of `now`, the same for every run of a night) for the
    members after `after_member_id`, in member-id chunks (`chunk_size`, by default
    `RECALCULATION_CHUNK`), until the last member or, with a `budget`, until that much time
    has passed (at least one chunk is done per run).

    A run that stops early enqueues the recalculation task from its last member id through
    the outbox, in the transaction of its last chunk: the follow-up exists if and only if
    that chunk committed, and a night's recalculation always reaches the last member."""
    chunk_size = chunk_size or RECALCULATION_CHUNK
    tiers_cache_clear()  # the nightly run always reads the tiers as they are now
    tiers = tiers_ordered()
    grace = timedelta(days=programme_get().tier_grace_days)
    run = TiersRecalculation()
    if not tiers:
        return run
    started = clock()
    last_id = after_member_id
    while True:
        member_ids = list(
            MemberTier.objects.exclude(tier=tiers[0])
            .filter(member_id__gt=last_id)
            .order_by("member_id")
            .values_list("member_id", flat=True)[:chunk_size]
        )
        if not member_ids:
            return run
        last_id = member_ids[-1]
        more = len(member_ids) == chunk_size
        with transaction.atomic():
            _recalculate_chunk(
                member_ids=member_ids, tiers=tiers, grace=grace, now=now, counts=run.counts
            )
            out_of_time = budget is not None and clock() - started >= budget.total_seconds()
            if more and out_of_time:
                from ..outbox import celery_task_enqueue

                celery_task_enqueue(RECALCULATION_TASK, now.isoformat(), last_id)
                run.resume_after = last_id
                return run
        if not more:
            return run


def _recalculate_chunk(
    *,
    member_ids: list[int],
    tiers: list[Tier],
    grace: timedelta,
    now: datetime,
    counts: dict[str, int],
) -> None:
    """One chunk of the recalculation, set-based: the qualifying points of the chunk in one
    query, the marks set and cleared in one UPDATE each (tier changes one by one: few)."""
    from .batch import qualifying_points_by_member  # batch imports this module

    # An earn may upgrade a member meanwhile (under their wallet lock): take the same locks,
    # in member-id order as every writer does, and decide on the states as they are now.
    _lock_wallets(member_ids)
    states = list(
        MemberTier.objects.select_related("tier")
        .filter(member_id__any=member_ids)
        .exclude(tier=tiers[0])
        .order_by("member_id")
    )
    points_by_member = qualifying_points_by_member(
        member_ids=[state.member_id for state in states], now=now
    )
    to_clear: list[int] = []
    to_mark: list[int] = []
    for state in states:
        points = points_by_member.get(state.member_id, 0)
        reached = tier_for_points(tiers, points) or tiers[0]
        if reached.qualifying_points >= state.tier.qualifying_points:
            if state.below_since:
                to_clear.append(state.member_id)
                counts["cleared"] += 1
            if reached.qualifying_points > state.tier.qualifying_points:
                _change(state.member, state, reached, points, "recalculation", now)
            continue
        if state.below_since is None:
            to_mark.append(state.member_id)
            counts["marked"] += 1
        elif now - state.below_since >= grace:
            _change(state.member, state, reached, points, "recalculation", now)
            counts["downgraded"] += 1
    if to_clear:
        MemberTier.objects.filter(member_id__any=to_clear).update(below_since=None)
    if to_mark:
        MemberTier.objects.filter(member_id__any=to_mark).update(below_since=now)
