"""Automatic giving, chosen by the member: a share of every earn (round-up), and points about
to expire given to a charity instead of being lost. Both make ordinary donations, with
receipts; neither has the programme's minimum donation."""

import logging
import math
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from coalition import services as ledger
from coalition.errors import CoalitionError
from coalition.models import Account, LedgerTransaction, Member, PointLot, Programme
from coalition.services.expiry import expiry_due

from ..errors import InvalidInput
from ..models import Charity, Donation, GivingPreference
from .donations import donation_create, require_donatable

logger = logging.getLogger(__name__)

_UNSET: Any = object()


def _percent(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise InvalidInput(
            "The round-up share must be a whole percentage from 1 to 100", field="roundUpPercent"
        )
    return value


@transaction.atomic
def giving_preferences_update(
    *,
    member: Member,
    round_up_charity: Charity | None = _UNSET,
    round_up_percent: int | None = _UNSET,
    expiry_charity: Charity | None = _UNSET,
    now: datetime | None = None,
) -> GivingPreference:
    """Change a member's automatic giving. Arguments left out keep their value; None
    switches a choice off (round-up needs both a charity and a share, or neither).

    A chosen charity must be verified now; if it is suspended later, giving to it pauses
    (the points stay with the member, or expire as they would have) until it is reinstated
    or the member chooses another.
    """
    preference, _ = GivingPreference.objects.select_for_update().get_or_create(member=member)
    if round_up_percent is not _UNSET:
        preference.round_up_percent = _percent(round_up_percent)
    if round_up_charity is not _UNSET:
        if round_up_charity is not None:
            require_donatable(round_up_charity, field="roundUpCharityId")
        preference.round_up_charity = round_up_charity
    if expiry_charity is not _UNSET:
        if expiry_charity is not None:
            require_donatable(expiry_charity, field="expiryCharityId")
        preference.expiry_charity = expiry_charity
    if (preference.round_up_charity_id is None) != (preference.round_up_percent is None):
        field = "roundUpCharityId" if preference.round_up_charity_id is None else "roundUpPercent"
        raise InvalidInput(
            "Round-up needs both a charity and a share (or neither, to switch it off)",
            field=field,
        )
    preference.updated_at = now or timezone.now()
    preference.save()
    return preference


def round_up_donate(*, earn_transaction: LedgerTransaction, now: datetime) -> Donation | None:
    """Give the member's round-up share of an earn to their charity, in the earn's own
    database transaction (the caller holds the member's wallet lock).

    floor(points × share / 100); nothing when that is 0, when the charity is not verified
    now, or when the wallet cannot cover it (a negative balance being repaid). A refusal
    never fails the earn: the round-up alone is rolled back and logged.
    """
    if earn_transaction.member_id is None or earn_transaction.member_points <= 0:
        return None
    preference = (
        GivingPreference.objects.select_related("round_up_charity", "member")
        .filter(member_id=earn_transaction.member_id, round_up_charity__isnull=False)
        .first()
    )
    if preference is None or not preference.round_up_percent:
        return None
    points = math.floor(earn_transaction.member_points * preference.round_up_percent / 100)
    charity = preference.round_up_charity
    if points <= 0 or charity.status != Charity.Status.VERIFIED:
        return None
    wallet = Account.objects.get(member_id=earn_transaction.member_id)
    if wallet.balance - wallet.held < points:
        return None
    try:
        return donation_create(
            member=preference.member,
            charity=charity,
            points=points,
            caller="system:round-up",
            idempotency_key=f"round-up:{earn_transaction.pk}",
            source=Donation.Source.ROUND_UP,
            now=now,
        )
    except CoalitionError as refusal:
        # Rolled back to its savepoint; the earn itself stands.
        logger.warning("round-up of transaction %s skipped: %s", earn_transaction.pk, refusal)
        return None


def _due_points(wallet: Account, programme: Programme, now: datetime) -> int:
    """What the expiry sweep would take from this wallet now: coalition's own rule (due lots,
    inactivity, never what a hold reserves nor below zero), not a copy of it."""
    due = expiry_due(member_ids=[wallet.member_id], programme=programme, now=now)
    return due[wallet.member_id].points if wallet.member_id in due else 0


@ledger.ledger_write
def _donate_expiring(preference_id: int, programme: Programme, now: datetime) -> Donation | None:
    preference = GivingPreference.objects.select_related("member", "expiry_charity").get(
        pk=preference_id
    )
    charity = preference.expiry_charity
    if charity is None or charity.status != Charity.Status.VERIFIED:
        return None
    if preference.member.status != Member.Status.ACTIVE:
        return None
    wallet = ledger.wallets_lock(member_ids=[preference.member_id])[preference.member_id]
    points = min(
        _due_points(wallet, programme, now), settings.COALITION["MAX_POINTS_PER_TRANSACTION"]
    )
    if points <= 0:
        return None
    return donation_create(
        member=preference.member,
        charity=charity,
        points=points,
        caller="system:expiry-giving",
        idempotency_key=None,  # the lots themselves say what is left to give
        source=Donation.Source.EXPIRY,
        now=now,
    )


def expiring_points_donate(*, now: datetime | None = None, batch_size: int = 500) -> int:
    """Give opted-in members' due points to their chosen charity, before the expiry sweep
    takes them as breakage. Returns how many points were given.

    Each member is its own short transaction (wallet locked), so a run never blocks a
    member for long, and two runs at once give the points once: the second finds the lots
    already spent. What cannot be given (charity suspended, member not active) is left to
    the expiry sweep.
    """
    now = now or timezone.now()
    programme = ledger.programme_get()
    if programme.expiry_policy == Programme.ExpiryPolicy.NONE:
        return 0
    opted_in = GivingPreference.objects.filter(
        expiry_charity__isnull=False, expiry_charity__status=Charity.Status.VERIFIED
    )
    if programme.expiry_policy == Programme.ExpiryPolicy.FIXED:
        due_members = PointLot.objects.filter(remaining__gt=0, expires_at__lte=now).values(
            "member_id"
        )
        opted_in = opted_in.filter(member_id__in=due_members)
    given = 0
    last_id = 0
    while True:
        batch = list(
            opted_in.filter(pk__gt=last_id).order_by("pk").values_list("pk", flat=True)[:batch_size]
        )
        if not batch:
            return given
        for preference_id in batch:
            try:
                donation = _donate_expiring(preference_id, programme, now)
            except CoalitionError as refusal:
                logger.warning("giving instead of expiry skipped (%s): %s", preference_id, refusal)
                continue
            if donation is not None:
                given += donation.points
        last_id = batch[-1]
