"""Expiry of due points into programme breakage."""

import logging
from datetime import datetime
from typing import TypeVar

from django.utils import timezone

from ..models import (
    Account,
    LedgerTransaction,
    PointLot,
    Programme,
)
from .idempotency import ledger_write
from .posting import Leg, _consume_lots, _post, add_months, programme_get, system_account_id

logger = logging.getLogger(__name__)

Kind = LedgerTransaction.Kind
MAX_TEXT_LENGTH = 255
# PostgreSQL: serialization failure, deadlock detected, lock not available.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
IDEMPOTENCY_CONSTRAINTS = frozenset(
    {"transaction_idempotency_unique", "hold_idempotency_unique", "idempotency_record_unique"}
)

T = TypeVar("T")


# --------------------------------------------------------------------------- expiry


def points_expire_due(*, now: datetime | None = None, batch_size: int = 500) -> int:
    """Expire due points into programme breakage; returns how many points expired.

    Fixed lifetime: lots whose expiry has passed. Inactivity: every lot of a member whose
    last activity is older than the programme's months. Points reserved by an active hold
    are left until the hold is resolved. Each member is its own short transaction, so a
    sweep never blocks a member's burn for long; two sweeps at once do the work once.
    """
    now = now or timezone.now()
    programme = programme_get()
    if programme.expiry_policy == Programme.ExpiryPolicy.NONE:
        return 0
    expired_total = 0
    last_member_id = 0
    while True:
        if programme.expiry_policy == Programme.ExpiryPolicy.FIXED:
            candidates = PointLot.objects.filter(
                remaining__gt=0, expires_at__lte=now, member_id__gt=last_member_id
            ).values_list("member_id", flat=True)
        else:
            inactive_since = add_months(now, -programme.expiry_months)
            candidates = Account.objects.filter(
                kind=Account.Kind.MEMBER_WALLET,
                balance__gt=0,
                last_activity_at__lte=inactive_since,
                member_id__gt=last_member_id,
            ).values_list("member_id", flat=True)
        batch = list(candidates.order_by("member_id").distinct()[:batch_size])
        if not batch:
            return expired_total
        for member_id in batch:
            expired_total += _expire_member(member_id, programme, now)
        last_member_id = batch[-1]


@ledger_write
def _expire_member(member_id: int, programme: Programme, now: datetime) -> int:
    wallet = Account.objects.select_for_update().get(member_id=member_id)
    lots = PointLot.objects.filter(member_id=member_id, remaining__gt=0)
    if programme.expiry_policy == Programme.ExpiryPolicy.FIXED:
        lots = lots.filter(expires_at__lte=now)
    else:
        inactive_since = add_months(now, -programme.expiry_months)
        if wallet.last_activity_at and wallet.last_activity_at > inactive_since:
            return 0  # active again since the candidates were listed
    due = list(lots.values_list("id", "remaining"))
    points = min(sum(remaining for _, remaining in due), max(wallet.balance - wallet.held, 0))
    if points <= 0:
        return 0
    consumed = _consume_lots(wallet, points, lot_ids=[lot_id for lot_id, _ in due])
    _post(
        kind=Kind.EXPIRE,
        legs=[Leg(wallet.pk, -points), Leg(system_account_id(Account.Kind.BREAKAGE), points)],
        caller="system:expiry",
        idempotency_key=None,
        request_hash="",
        created_at=now,
        member_id=member_id,
        wallet=wallet,
        metadata={"lots": consumed, "policy": programme.expiry_policy},
    )
    return points
