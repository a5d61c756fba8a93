"""Two-phase redemption: authorize a hold, then capture or void it; unused holds expire."""

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from ..errors import (
    HoldNotActive,
    IdempotencyConflict,
    InvalidInput,
)
from ..models import (
    Account,
    LedgerTransaction,
    Member,
    RedemptionHold,
)
from .idempotency import (
    _setting,
    idempotency_record,
    idempotency_replay,
    ledger_write,
    request_fingerprint,
    transaction_replay,
)
from .points import _burn_rules
from .posting import (
    Leg,
    _consume_lots,
    _lock_wallet,
    _mark_activity,
    _post,
    _release_due_holds,
    _require_active_member,
    _require_active_partner,
    _require_spendable,
    _set_held,
    system_account_id,
    validate_idempotency_key,
    validate_points,
    validate_text,
)

Kind = LedgerTransaction.Kind


# --------------------------------------------------------------------------- holds


@ledger_write
def hold_authorize(
    *,
    caller: str,
    idempotency_key: str,
    member: Member,
    partner: Any,
    points: int,
    reference: str = "",
    now: datetime | None = None,
) -> RedemptionHold:
    """Reserve points at a till, to be captured or voided; unused, it expires by itself."""
    validate_idempotency_key(idempotency_key)
    points = validate_points(points)
    reference = validate_text(reference, field="reference")
    request_hash = request_fingerprint(
        "hold_authorize", member=member.pk, partner=partner.pk, points=points, reference=reference
    )

    def replay() -> RedemptionHold | None:
        existing = RedemptionHold.objects.filter(
            caller=caller, idempotency_key=idempotency_key
        ).first()
        if existing and existing.request_hash != request_hash:
            raise IdempotencyConflict(
                "This idempotency key was already used for a different request",
                field="idempotencyKey",
            )
        return existing

    if existing := replay():
        return existing
    _require_active_member(member)
    _require_active_partner(partner)
    now = now or timezone.now()
    wallet = _lock_wallet(member)
    if existing := replay():
        return existing
    _burn_rules(member, points, now)
    _release_due_holds(wallet, now)
    _require_spendable(wallet, points)
    hold = RedemptionHold.objects.create(
        member=member,
        partner=partner,
        points=points,
        reference=reference,
        caller=caller,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        expires_at=now + timedelta(minutes=_setting("HOLD_TTL_MINUTES")),
        created_at=now,
    )
    _set_held(wallet, wallet.held + points)
    return hold


def _active_hold(hold: RedemptionHold, now: datetime) -> RedemptionHold:
    """The hold as stored now (its wallet locked by the caller), if it can still be used."""
    hold = RedemptionHold.objects.select_related("member", "partner").get(pk=hold.pk)
    if hold.status != RedemptionHold.Status.ACTIVE:
        raise HoldNotActive(f"The hold is {hold.status}", field="holdId")
    if hold.expires_at <= now:
        raise HoldNotActive("The hold has expired", field="holdId")
    return hold


@ledger_write
def hold_capture(
    *,
    caller: str,
    idempotency_key: str,
    hold: RedemptionHold,
    points: int | None = None,
    now: datetime | None = None,
) -> LedgerTransaction:
    """Burn all or part of a hold's points; whatever is not captured is released."""
    validate_idempotency_key(idempotency_key)
    if points is not None:
        points = validate_points(points)
    request_hash = request_fingerprint("hold_capture", hold=hold.pk, points=points)
    if replay := transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    ):
        return replay
    now = now or timezone.now()
    redeemed = system_account_id(Account.Kind.PARTNER_REDEEMED, partner_id=hold.partner_id)
    wallet = _lock_wallet(hold.member)
    # A racing retry that held the lock first may have captured it: replay that capture.
    if replay := transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    ):
        return replay
    hold = _active_hold(hold, now)
    # As a burn: a member or partner suspended since the hold was made spends nothing (the
    # hold can still be voided, or expires and releases its points).
    _require_active_member(hold.member)
    _require_active_partner(hold.partner)
    capture = hold.points if points is None else points
    if capture > hold.points:
        raise InvalidInput(
            f"Cannot capture {capture} points from a hold of {hold.points}", field="points"
        )
    # Release the reservation first: the capture spends what the hold kept aside.
    _set_held(wallet, wallet.held - hold.points)
    lots = _consume_lots(wallet, capture)
    txn = _post(
        kind=Kind.BURN,
        legs=[Leg(wallet.pk, -capture), Leg(redeemed, capture)],
        caller=caller,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        created_at=now,
        member_id=hold.member_id,
        wallet=wallet,
        partner=hold.partner,
        reference=hold.reference,
        hold=hold,
        metadata={"lots": lots, "hold": hold.pk},
    )
    hold.status = RedemptionHold.Status.CAPTURED
    hold.captured_points = capture
    hold.resolved_at = now
    hold.save(update_fields=["status", "captured_points", "resolved_at"])
    _mark_activity(wallet, now)
    return txn


@ledger_write
def hold_void(
    *, caller: str, idempotency_key: str, hold: RedemptionHold, now: datetime | None = None
) -> RedemptionHold:
    """Release a hold's points without burning them."""
    validate_idempotency_key(idempotency_key)
    request_hash = request_fingerprint("hold_void", hold=hold.pk)
    lookup = {"caller": caller, "idempotency_key": idempotency_key}
    if idempotency_replay(**lookup, operation="hold_void", request_hash=request_hash):
        return RedemptionHold.objects.get(pk=hold.pk)
    now = now or timezone.now()
    wallet = _lock_wallet(hold.member)
    # A racing retry that held the lock first may have voided it: replay that result.
    if idempotency_replay(**lookup, operation="hold_void", request_hash=request_hash):
        return RedemptionHold.objects.get(pk=hold.pk)
    hold = _active_hold(hold, now)
    hold.status = RedemptionHold.Status.VOIDED
    hold.resolved_at = now
    hold.save(update_fields=["status", "resolved_at"])
    _set_held(wallet, wallet.held - hold.points)
    idempotency_record(
        **lookup, operation="hold_void", request_hash=request_hash, result_id=hold.pk
    )
    return hold


def holds_expire_due(*, now: datetime | None = None, limit: int = 10_000) -> list[int]:
    """Expire active holds past their time, releasing their points. Safe to run concurrently.

    Returns the ids of the holds this call expired.
    """
    now = now or timezone.now()
    member_ids = (
        RedemptionHold.objects.filter(status=RedemptionHold.Status.ACTIVE, expires_at__lte=now)
        .order_by("member_id")
        .values_list("member_id", flat=True)
        .distinct()[:limit]
    )
    expired: list[int] = []
    for member_id in list(member_ids):
        expired.extend(_expire_member_holds(member_id, now))
    return expired


@ledger_write
def _expire_member_holds(member_id: int, now: datetime) -> list[int]:
    wallet = Account.objects.select_for_update().get(member_id=member_id)
    due = [
        hold.pk
        for hold in RedemptionHold.objects.filter(
            member_id=member_id, status=RedemptionHold.Status.ACTIVE, expires_at__lte=now
        )
    ]
    _release_due_holds(wallet, now)
    return due
