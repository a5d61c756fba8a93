"""Reversals (refunds) of member transactions, in full or in part."""

from datetime import datetime
from typing import Any

from django.utils import timezone

from ..errors import (
    AlreadyReversed,
    InvalidInput,
    InvalidState,
)
from ..models import (
    Account,
    LedgerTransaction,
)
from .idempotency import ledger_write, request_fingerprint, transaction_replay
from .posting import (
    Leg,
    _consume_lots,
    _credit_lots,
    _post,
    lot_expiry,
    programme_get,
    validate_idempotency_key,
    validate_points,
    validate_text,
)

Kind = LedgerTransaction.Kind


# --------------------------------------------------------------------------- reversals

REVERSIBLE_KINDS = frozenset({Kind.EARN, Kind.BONUS, Kind.BURN, Kind.DONATE})


def split_largest_remainder(total: int, weights: list[int]) -> list[int]:
    """Split `total` in proportion to `weights` so that the parts add back to `total`."""
    weight_sum = sum(weights)
    if weight_sum == 0:
        raise ValueError("cannot split by zero weights")
    exact = [total * weight for weight in weights]
    parts = [value // weight_sum for value in exact]
    remainders = sorted(range(len(weights)), key=lambda i: (-(exact[i] % weight_sum), i))
    for index in remainders[: total - sum(parts)]:
        parts[index] += 1
    return parts


def reversible_points(original: LedgerTransaction) -> int:
    """How many of a transaction's member points are not yet reversed."""
    reversed_so_far = sum(
        abs(points) for points in original.reversals.values_list("member_points", flat=True)
    )
    return abs(original.member_points) - reversed_so_far


@ledger_write
def transaction_reverse(
    *,
    caller: str,
    idempotency_key: str,
    transaction_to_reverse: LedgerTransaction,
    points: int | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> LedgerTransaction:
    """Reverse a member transaction in full or in part (a refund), mirroring its entries.

    Never more than what remains unreversed. Reversing an earn the member already spent may
    take the wallet negative; while negative the member can't burn, hold or donate. Points
    given back by a reversed burn return to the lots they came from, with their expiry.
    """
    original = transaction_to_reverse
    validate_idempotency_key(idempotency_key)
    reason = validate_text(reason, field="reason")
    if points is not None:
        points = validate_points(points)
    request_hash = request_fingerprint(
        "transaction_reverse", transaction=original.pk, points=points, reason=reason
    )
    if replay := transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    ):
        return replay
    if original.kind == Kind.REVERSAL:
        raise InvalidState("A reversal cannot itself be reversed", field="transactionId")
    if original.kind not in REVERSIBLE_KINDS or original.member_id is None:
        raise InvalidState(
            f"A {original.kind} transaction cannot be reversed", field="transactionId"
        )
    now = now or timezone.now()
    wallet = Account.objects.select_for_update().get(member_id=original.member_id)
    if replay := transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    ):
        return replay
    remaining = reversible_points(original)
    if remaining <= 0:
        raise AlreadyReversed("The transaction is already fully reversed", field="transactionId")
    amount = remaining if points is None else points
    if amount > remaining:
        raise InvalidInput(
            f"Only {remaining} points of this transaction remain to be reversed", field="points"
        )

    original_legs = list(original.entries.values_list("account_id", "points"))
    other_legs = [(account, pts) for account, pts in original_legs if account != wallet.pk]
    parts = split_largest_remainder(amount, [abs(pts) for _, pts in other_legs])
    direction = 1 if original.member_points > 0 else -1  # +1: the original credited the member
    legs = [Leg(wallet.pk, -direction * amount)]
    legs += [
        Leg(account, direction * part) for (account, _), part in zip(other_legs, parts, strict=True)
    ]

    balance_before = wallet.balance
    metadata: dict[str, Any] = {"reason": reason}
    extra_lot_points = 0
    if direction > 0:
        # Take back the original's own lot first, then the earliest-expiring ones.
        own_lots = list(original.lots.values_list("id", flat=True))
        metadata["lots"] = _consume_lots(wallet, amount, prefer_lot_ids=own_lots)
    else:
        # Give the points back to the lots the burn took them from, keeping their expiry.
        quota = _unrestored_lots(original)
        restorable = min(amount, sum(left for _, left in quota))
        metadata["restored"] = _credit_lots(
            wallet, restorable, balance_before=balance_before, restore=quota
        )
        extra_lot_points = amount - restorable
    txn = _post(
        kind=Kind.REVERSAL,
        legs=legs,
        caller=caller,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        created_at=now,
        member_id=original.member_id,
        wallet=wallet,
        partner=original.partner,
        charity=original.charity,
        reference=original.reference,
        reversal_of=original,
        metadata=metadata,
    )
    if extra_lot_points:
        # A burn made before lots were tracked for it: the points get a fresh lot.
        _credit_lots(
            wallet,
            extra_lot_points,
            balance_before=balance_before + restorable,
            txn=txn,
            expires_at=lot_expiry(programme_get(), now),
        )
    return txn


def _unrestored_lots(burn: LedgerTransaction) -> list[list[int]]:
    """The lots a burn consumed, less what earlier reversals of it gave back."""
    restored: dict[int, int] = {}
    for earlier in burn.reversals.all():
        for lot_id, points in earlier.metadata.get("restored", []):
            restored[lot_id] = restored.get(lot_id, 0) + points
    quota = []
    for lot_id, taken in burn.metadata.get("lots", []):
        left = taken - restored.pop(lot_id, 0)
        if left > 0:
            quota.append([lot_id, left])
    return quota
