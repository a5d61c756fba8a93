"""Sponsor matches: a partner issues points straight into a charity's account.

A MATCH moves no member wallet: the sponsor's partner-issued account is debited (it pays
issuance at settlement) and the charity's received account credited. Which donations are
matched, and how much, is the charity app's business (its campaigns); this is the ledger
part only.
"""

import logging
from datetime import datetime
from typing import Any

from django.utils import timezone

from ..errors import AlreadyReversed, InvalidInput, InvalidState
from ..models import Account, LedgerTransaction
from .idempotency import ledger_write, request_fingerprint, transaction_replay
from .posting import (
    Leg,
    _post,
    _require_active_partner,
    system_account_id,
    validate_idempotency_key,
    validate_points,
    validate_text,
)

logger = logging.getLogger(__name__)

Kind = LedgerTransaction.Kind


@ledger_write
def points_match(
    *,
    caller: str,
    idempotency_key: str | None,
    sponsor: Any,
    charity: Any,
    points: int,
    metadata: dict | None = None,
    request_hash: str | None = None,
    now: datetime | None = None,
) -> LedgerTransaction:
    """Issue `points` from a sponsoring partner into a charity's account (kind MATCH)."""
    if idempotency_key is not None:
        validate_idempotency_key(idempotency_key)
    points = validate_points(points)
    if charity is None:
        raise InvalidInput("A charity is required", field="charity")
    request_hash = request_hash or request_fingerprint(
        "points_match", sponsor=getattr(sponsor, "pk", None), charity=charity.pk, points=points
    )
    replay = transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    )
    if replay:
        return replay
    _require_active_partner(sponsor)
    now = now or timezone.now()
    issued = system_account_id(Account.Kind.PARTNER_ISSUED, partner_id=sponsor.pk)
    received = system_account_id(Account.Kind.CHARITY_RECEIVED, charity_id=charity.pk)
    # No wallet to lock: nothing to serialise on, the accounts are aggregates.
    return _post(
        kind=Kind.MATCH,
        legs=[Leg(issued, -points), Leg(received, points)],
        caller=caller,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        created_at=now,
        partner=sponsor,
        charity=charity,
        metadata=metadata,
    )


@ledger_write
def points_match_reverse(
    *,
    caller: str,
    idempotency_key: str,
    match_transaction: LedgerTransaction,
    reason: str = "",
    now: datetime | None = None,
) -> LedgerTransaction:
    """Reverse a sponsor match in full (its donation was refunded): mirror its entries."""
    original = match_transaction
    validate_idempotency_key(idempotency_key)
    reason = validate_text(reason, field="reason")
    request_hash = request_fingerprint(
        "points_match_reverse", transaction=original.pk, reason=reason
    )
    if replay := transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    ):
        return replay
    if original.kind != Kind.MATCH:
        raise InvalidState(f"A {original.kind} transaction is not a match", field="transactionId")
    # Lock the original's row: two refunds racing cannot both reverse it.
    LedgerTransaction.objects.select_for_update().filter(pk=original.pk).first()
    if original.reversals.exists():
        raise AlreadyReversed("The match is already reversed", field="transactionId")
    now = now or timezone.now()
    legs = [
        Leg(account, -points)
        for account, points in original.entries.values_list("account_id", "points")
    ]
    return _post(
        kind=Kind.REVERSAL,
        legs=legs,
        caller=caller,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        created_at=now,
        partner=original.partner,
        charity=original.charity,
        reversal_of=original,
        metadata={"reason": reason},
    )
