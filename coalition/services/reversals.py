"""Reversals (refunds) of member transactions, in full or in part.

A reversal mirrors its original's entries (possibly in part), and also undoes what the
original set off, so that no wallet, charity or counter keeps what the refund took away:

- **Expired points come back out of breakage.** Reversing an earn (or bonus) takes back
  first what the member still holds of its own lot, then what that lot lost to expiry — the
  EXPIRE transactions record in `metadata.lots` which lots they took, an erasure's forfeit
  included — and only the rest (what the member spent) from the wallet. The reversal itself
  still debits the wallet with every point it reverses (tiers, statements and
  `reversible_points` see the refund whole); the expired share is returned to the wallet by
  a REVERSAL of each EXPIRE transaction concerned (breakage → wallet, `metadata.unexpired`
  [[lot id, points]], `metadata.reversal`), so breakage never gives back more than it took.
- **A closed wallet takes no credit.** A reversal that credits the member (a refunded burn
  or donation) of a closed member (erased, or closed by staff: nobody can ever spend those
  points) is posted as usual — the partner's or charity's side is exactly that of any
  refund, so settlement stays right — and what it puts into the wallet beyond a debt of
  record is forfeited into breakage at once, by an EXPIRE transaction (`metadata.reason`
  "closed", `metadata.reversal`), as erasure itself does.
- **Other apps' follow-ups** run in the same database transaction, under the wallet lock,
  through hooks (`settings.COALITION_REVERSAL_HOOKS`): the charity app refunds the round-up
  donation of a refunded earn before the reversal posts (so the points come back to the
  lots before the earn takes its own lot back), the partners app releases promotion limits
  and budgets and claws back referral bonuses after it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from django.apps import apps
from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from ..errors import (
    AlreadyReversed,
    InvalidInput,
    InvalidState,
)
from ..models import (
    Account,
    LedgerTransaction,
    Member,
)
from .idempotency import ledger_write, request_fingerprint, transaction_replay
from .posting import (
    Leg,
    _consume_lots,
    _credit_lots,
    _post,
    lot_expiry,
    programme_get,
    system_account_id,
    validate_idempotency_key,
    validate_points,
    validate_text,
)

Kind = LedgerTransaction.Kind

# The callers of the system postings a reversal may add (their keys derive from the
# reversal's id, unique under these callers).
UNEXPIRE_CALLER = "system:expiry"
CLOSED_WALLET_CALLER = "system:closed-wallet"

# Hooks of other apps (`settings.COALITION_REVERSAL_HOOKS`), dotted paths of
# `fn(event: ReversalEvent) -> Any`: "before" run once the reversal is validated and the
# wallet locked, before it posts; "after" once it has posted (`event.reversal` set). A hook
# of an app that is not installed is skipped.


@dataclass(frozen=True)
class ReversalEvent:
    """A reversal being made, as its hooks see it."""

    original: LedgerTransaction
    points: int  # reversed by this reversal
    reversed_before: int  # of the original, by earlier reversals
    caller: str
    reason: str
    now: datetime
    reversal: LedgerTransaction | None = None  # set for the "after" hooks

    @property
    def reversed_after(self) -> int:
        return self.reversed_before + self.points

    @property
    def fully_reversed(self) -> bool:
        """Does this reversal reverse the last of its original?"""
        return self.reversed_after >= abs(self.original.member_points)


def _hooks(phase: str) -> list[Callable[[ReversalEvent], Any]]:
    configured = getattr(settings, "COALITION_REVERSAL_HOOKS", {})
    return [
        import_string(path)
        for path in configured.get(phase, [])
        if apps.is_installed(path.split(".", 1)[0])
    ]


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

    Never more than what remains unreversed. Reversing an earn or bonus takes back what the
    member still holds of it, then what of it expired (out of breakage), and only then what
    the member spent: that part may take the wallet negative, and while negative the member
    can't burn, hold or donate. Points given back by a reversed burn or donation return to
    the lots they came from, with their expiry; given back to a closed member, they go on to
    breakage. Other apps' follow-ups (round-up refund, promotion and referral rewards) run
    in the same transaction (see the module docstring).
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

    event = ReversalEvent(
        original=original,
        points=amount,
        reversed_before=abs(original.member_points) - remaining,
        caller=caller,
        reason=reason,
        now=now,
    )
    before_hooks = _hooks("before")
    for hook in before_hooks:
        hook(event)
    if before_hooks:
        wallet.refresh_from_db()  # the hooks' own postings moved it (still locked)

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
    unexpire: list[tuple[LedgerTransaction, list[list[int]]]] = []
    if direction > 0:
        # What the member still holds of the original's own lot first, then what that lot
        # lost to expiry (back out of breakage), then the earliest-expiring other lots.
        own_lots = dict(original.lots.values_list("id", "remaining"))
        still_held = min(amount, sum(own_lots.values()))
        unexpire = _expired_share(original, list(own_lots), amount - still_held)
        from_breakage = sum(points for _, lots in unexpire for _, points in lots)
        metadata["lots"] = _consume_lots(
            wallet, amount - from_breakage, prefer_lot_ids=list(own_lots)
        )
        if from_breakage:
            metadata["fromBreakage"] = from_breakage
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
    if unexpire:
        _unexpire(wallet, reversal=txn, share=unexpire, now=now)
    if direction < 0:
        _forfeit_if_closed(wallet, reversal=txn, points=amount, now=now)
    for hook in _hooks("after"):
        hook(replace(event, reversal=txn))
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


# --------------------------------------------------------------------------- expired share


def _expired_share(
    original: LedgerTransaction, lot_ids: list[int], wanted: int
) -> list[tuple[LedgerTransaction, list[list[int]]]]:
    """Up to `wanted` points that these lots lost to expiry (or an erasure's forfeit) and
    that breakage has not given back yet: [(EXPIRE transaction, [[lot id, points], ...])].

    Only EXPIRE transactions of the member posted after the original can have taken from
    its lots (ids grow); a member has few of them.
    """
    if wanted <= 0 or not lot_ids:
        return []
    own = set(lot_ids)
    expiries = (
        LedgerTransaction.objects.filter(
            member_id=original.member_id, kind=Kind.EXPIRE, pk__gt=original.pk
        )
        .prefetch_related("reversals")
        .order_by("id")
    )
    share: list[tuple[LedgerTransaction, list[list[int]]]] = []
    for expiry in expiries:
        taken: dict[int, int] = {}
        for lot_id, points in expiry.metadata.get("lots", []):
            if lot_id in own:
                taken[lot_id] = taken.get(lot_id, 0) + points
        if not taken:
            continue
        for earlier in expiry.reversals.all():
            for lot_id, points in earlier.metadata.get("unexpired", []):
                if lot_id in taken:
                    taken[lot_id] -= points
        back: list[list[int]] = []
        for lot_id in sorted(taken):
            give = min(taken[lot_id], wanted)
            if give > 0:
                back.append([lot_id, give])
                wanted -= give
        if back:
            share.append((expiry, back))
        if wanted == 0:
            break
    return share


def _unexpire(
    wallet: Account,
    *,
    reversal: LedgerTransaction,
    share: list[tuple[LedgerTransaction, list[list[int]]]],
    now: datetime,
) -> None:
    """Return the expired share a reversal took back, breakage → wallet, one REVERSAL of
    each EXPIRE transaction concerned. No lot changes: the reversal's own debit consumed
    lots only for the points it did not take back from breakage."""
    breakage = system_account_id(Account.Kind.BREAKAGE)
    for expiry, lots in share:
        points = sum(taken for _, taken in lots)
        _post(
            kind=Kind.REVERSAL,
            legs=[Leg(wallet.pk, points), Leg(breakage, -points)],
            caller=UNEXPIRE_CALLER,
            idempotency_key=f"unexpire:{reversal.pk}:{expiry.pk}",
            request_hash=request_fingerprint(
                "reversal_unexpire", reversal=reversal.pk, expiry=expiry.pk
            ),
            created_at=now,
            member_id=wallet.member_id,
            wallet=wallet,
            reference=expiry.reference,
            reversal_of=expiry,
            metadata={
                "reason": f"transaction {reversal.reversal_of_id} reversed after its points "
                "expired",
                "reversal": reversal.pk,
                "unexpired": lots,
            },
        )


# --------------------------------------------------------------------------- closed wallets


def _forfeit_if_closed(
    wallet: Account, *, reversal: LedgerTransaction, points: int, now: datetime
) -> None:
    """A closed member's wallet keeps no credit: what the reversal put into it, beyond a
    debt of record it repaid, goes on to breakage (as erasure forfeits a balance)."""
    if not Member.objects.filter(pk=wallet.member_id, status=Member.Status.CLOSED).exists():
        return
    forfeit = min(points, wallet.balance - wallet.held)
    if forfeit <= 0:
        return
    lots = _consume_lots(wallet, forfeit)
    _post(
        kind=Kind.EXPIRE,
        legs=[Leg(wallet.pk, -forfeit), Leg(system_account_id(Account.Kind.BREAKAGE), forfeit)],
        caller=CLOSED_WALLET_CALLER,
        idempotency_key=f"forfeit:{reversal.pk}",
        request_hash=request_fingerprint("reversal_forfeit", reversal=reversal.pk),
        created_at=now,
        member_id=wallet.member_id,
        wallet=wallet,
        reference="refund to a closed wallet",
        metadata={"reason": "closed", "reversal": reversal.pk, "lots": lots},
    )
