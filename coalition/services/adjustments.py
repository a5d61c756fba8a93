"""Operator adjustments of a member's points."""

from datetime import datetime
from typing import Any

from django.utils import timezone

from ..errors import (
    InvalidInput,
    PermissionDenied,
)
from ..models import (
    Account,
    AdjustmentNote,
    LedgerTransaction,
    Member,
)
from .idempotency import ledger_write, request_fingerprint, transaction_replay
from .posting import (
    Leg,
    _consume_lots,
    _credit_lots,
    _lock_wallet,
    _post,
    _require_spendable,
    lot_expiry,
    programme_get,
    system_account_id,
    validate_idempotency_key,
    validate_points,
)

Kind = LedgerTransaction.Kind


# --------------------------------------------------------------------------- adjustments


@ledger_write
def points_adjust(
    *,
    staff_user: Any,
    member: Member,
    points: int,
    reason: str,
    idempotency_key: str,
    now: datetime | None = None,
) -> LedgerTransaction:
    """An operator's correction of a member's points, with who made it and why.

    Positive points are credited from the operator's adjustment account into a new lot;
    negative points are taken back, never below what the member can spend.
    """
    validate_idempotency_key(idempotency_key)
    if isinstance(points, bool) or not isinstance(points, int) or points == 0:
        raise InvalidInput("Points must be a non-zero whole number", field="points")
    validate_points(abs(points))
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("A reason is required for an adjustment", field="reason")
    if staff_user is None or not getattr(staff_user, "is_staff", False):
        raise PermissionDenied("Only staff may adjust points", field="staffUser")
    caller = f"staff:{staff_user.pk}"
    request_hash = request_fingerprint(
        "points_adjust", member=member.pk, points=points, reason=reason
    )
    if replay := transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    ):
        return replay
    now = now or timezone.now()
    operator = system_account_id(Account.Kind.OPERATOR_ADJUSTMENT)
    wallet = _lock_wallet(member)
    if replay := transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    ):
        return replay
    balance_before = wallet.balance
    lots: list[list[int]] = []
    if points < 0:
        _require_spendable(wallet, -points)
        lots = _consume_lots(wallet, -points)
    txn = _post(
        kind=Kind.ADJUSTMENT,
        legs=[Leg(wallet.pk, points), Leg(operator, -points)],
        caller=caller,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        created_at=now,
        member_id=member.pk,
        wallet=wallet,
        metadata={"reason": reason, "lots": lots},
    )
    if points > 0:
        _credit_lots(
            wallet,
            points,
            balance_before=balance_before,
            txn=txn,
            expires_at=lot_expiry(programme_get(), now),
        )
    AdjustmentNote.objects.create(transaction=txn, staff_user=staff_user, reason=reason)
    from ..audit import audit_record  # issue 9: every staff action is in the audit trail

    audit_record(
        actor=staff_user,
        action="points.adjust",
        object_type="coalition.member",
        object_id=member.pk,
        before={"balance": balance_before},
        after={
            "balance": wallet.balance,
            "points": points,
            "reason": reason,
            "transaction": txn.pk,
        },
    )
    return txn
