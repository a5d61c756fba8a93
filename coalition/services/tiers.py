"""Coalition-wide tiers: upgrade at once on the earn that crosses a threshold, downgrade only
at the nightly recalculation and only after the programme's grace period below it."""

import time
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


def tiers_recalculate(*, now: datetime | None = None) -> dict[str, int]:
    """The nightly recalculation: members below their tier's threshold are marked, and moved
    down once they have stayed below it for the programme's grace period."""
    now = now or timezone.now()
    tiers_cache_clear()  # the nightly run always reads the tiers as they are now
    tiers = tiers_ordered()
    grace = timedelta(days=programme_get().tier_grace_days)
    counts = {"downgraded": 0, "marked": 0, "cleared": 0}
    if not tiers:
        return counts
    states = MemberTier.objects.exclude(tier=tiers[0]).order_by("member_id")
    for member_id in list(states.values_list("member_id", flat=True)):
        with transaction.atomic():
            # An earn may upgrade this member meanwhile (under their wallet lock): take the
            # same lock, in the same order, and decide on the state as it is now.
            _lock_wallets([member_id])
            state = (
                MemberTier.objects.select_related("tier", "member")
                .filter(member_id=member_id)
                .exclude(tier=tiers[0])
                .first()
            )
            if state is None:
                continue
            points = qualifying_points(member=state.member, now=now)
            reached = tier_for_points(tiers, points) or tiers[0]
            if reached.qualifying_points >= state.tier.qualifying_points:
                if state.below_since:
                    state.below_since = None
                    state.save(update_fields=["below_since"])
                    counts["cleared"] += 1
                if reached.qualifying_points > state.tier.qualifying_points:
                    _change(state.member, state, reached, points, "recalculation", now)
                continue
            if state.below_since is None:
                state.below_since = now
                state.save(update_fields=["below_since"])
                counts["marked"] += 1
            elif now - state.below_since >= grace:
                _change(state.member, state, reached, points, "recalculation", now)
                counts["downgraded"] += 1
    return counts
