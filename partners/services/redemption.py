"""Burning points at a partner's till: one-shot, or authorise-then-capture; refunds; rewards.

The member's discount is points × the partner's redemption price in force at that moment; the
partner is reimbursed the same at settlement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import F
from django.utils import timezone

from coalition import services as ledger
from coalition.errors import InvalidState, NotFound
from coalition.models import LedgerTransaction, Member, RedemptionHold
from coalition.money import Money, points_value
from coalition.selectors import hold_get, member_get_by_number

from .. import webhooks
from ..models import Partner, Reward, RewardRedemption
from .accounts import require_active_partner


@dataclass
class Redemption:
    transaction: LedgerTransaction
    discount: Money
    replayed: bool = False


def redemption_discount(*, partner: Partner, points: int, at: datetime) -> Money:
    """What `points` redeemed at this partner are worth to the member, at the terms then."""
    from ..selectors import terms_at

    price: Decimal = terms_at(partner=partner, moment=at).redemption_price
    return Money(points_value(points, price, partner.currency), partner.currency)


def _redemption(txn: LedgerTransaction, partner: Partner) -> Redemption:
    return Redemption(
        transaction=txn,
        discount=redemption_discount(partner=partner, points=-txn.member_points, at=txn.created_at),
        replayed=getattr(txn, "replayed", False),
    )


@ledger.ledger_write
def points_redeem(
    *,
    partner: Partner,
    idempotency_key: str,
    member_number: str,
    points: int,
    reference: str,
    now: datetime | None = None,
) -> Redemption:
    """Redeem points at the till in one step."""
    ledger.validate_idempotency_key(idempotency_key)
    reference = ledger.validate_text(reference, field="reference", required=True)
    member = member_get_by_number(member_number=member_number)
    require_active_partner(partner)
    txn = ledger.points_burn(
        caller=f"partner:{partner.pk}",
        idempotency_key=idempotency_key,
        member=member,
        partner=partner,
        points=points,
        reference=reference,
        now=now,
    )
    _event_unless_replayed(txn, partner, webhooks.EventType.POINTS_REDEEMED)
    return _redemption(txn, partner)


def redemption_authorize(
    *,
    partner: Partner,
    idempotency_key: str,
    member_number: str,
    points: int,
    reference: str,
    now: datetime | None = None,
) -> RedemptionHold:
    """Reserve points at the till; capture or void follows, or the hold expires by itself."""
    reference = ledger.validate_text(reference, field="reference", required=True)
    member = member_get_by_number(member_number=member_number)
    require_active_partner(partner)
    return ledger.hold_authorize(
        caller=f"partner:{partner.pk}",
        idempotency_key=idempotency_key,
        member=member,
        partner=partner,
        points=points,
        reference=reference,
        now=now,
    )


@ledger.ledger_write
def redemption_capture(
    *,
    partner: Partner,
    idempotency_key: str,
    hold_id: int,
    points: int | None = None,
    now: datetime | None = None,
) -> Redemption:
    """Capture a hold of this partner's, in whole or in part."""
    hold = hold_get(hold_id=hold_id, partner_id=partner.pk)
    txn = ledger.hold_capture(
        caller=f"partner:{partner.pk}",
        idempotency_key=idempotency_key,
        hold=hold,
        points=points,
        now=now,
    )
    _event_unless_replayed(txn, partner, webhooks.EventType.POINTS_REDEEMED)
    return _redemption(txn, partner)


def redemption_void(
    *, partner: Partner, idempotency_key: str, hold_id: int, now: datetime | None = None
) -> RedemptionHold:
    """Release a hold of this partner's."""
    hold = hold_get(hold_id=hold_id, partner_id=partner.pk)
    return ledger.hold_void(
        caller=f"partner:{partner.pk}", idempotency_key=idempotency_key, hold=hold, now=now
    )


@ledger.ledger_write
def partner_transaction_reverse(
    *,
    partner: Partner,
    idempotency_key: str,
    transaction_id: int,
    points: int | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> LedgerTransaction:
    """Reverse (refund) one of this partner's own earns or burns, in full or in part."""
    original = LedgerTransaction.objects.filter(pk=transaction_id, partner=partner).first()
    if original is None:
        raise NotFound("No such transaction", field="transactionId")
    reversal = ledger.transaction_reverse(
        caller=f"partner:{partner.pk}",
        idempotency_key=idempotency_key,
        transaction_to_reverse=original,
        points=points,
        reason=reason,
        now=now,
    )
    _event_unless_replayed(reversal, partner, webhooks.EventType.TRANSACTION_REVERSED)
    return reversal


def _event_unless_replayed(txn: LedgerTransaction, partner: Partner, event_type: str) -> None:
    """Tell the partner's webhooks, in the write's own transaction (a replay told them)."""
    if not getattr(txn, "replayed", False):
        webhooks.event_record(
            partner=partner, type=event_type, payload=lambda: webhooks.transaction_payload(txn)
        )


@ledger.ledger_write
def reward_redeem(
    *, member: Member, reward_id: int, idempotency_key: str, now: datetime | None = None
) -> RewardRedemption:
    """A member buys a catalogue reward with points: the burn and the stock decrement happen
    together, and stock never goes below zero whatever the concurrency."""
    ledger.validate_idempotency_key(idempotency_key)
    now = now or timezone.now()
    caller = f"member:{member.pk}"
    reward = Reward.objects.select_related("partner").filter(pk=reward_id).first()
    if reward is None:
        raise NotFound("No such reward", field="rewardId")
    request_hash = ledger.request_fingerprint("reward_redeem", reward=reward.pk)
    existing = ledger.transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    )
    if existing is not None:
        return existing.reward_redemption
    if not reward.active or (reward.starts_at and reward.starts_at > now):
        raise InvalidState("This reward is not available", field="rewardId")
    if reward.ends_at and reward.ends_at <= now:
        raise InvalidState("This reward is no longer available", field="rewardId")
    require_active_partner(reward.partner)
    ledger.wallets_lock(member_ids=[member.pk])
    # A request with this key that held the lock first (a double click) has redeemed: replay
    # it, before taking stock or points again.
    existing = ledger.transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    )
    if existing is not None:
        return existing.reward_redemption
    if reward.stock is not None:
        taken = Reward.objects.filter(pk=reward.pk, stock__gt=0).update(stock=F("stock") - 1)
        if not taken:
            raise InvalidState("This reward is out of stock", field="rewardId")
    txn = ledger.points_burn(
        caller=caller,
        idempotency_key=idempotency_key,
        member=member,
        partner=reward.partner,
        points=reward.points_cost,
        reference=f"reward:{reward.pk}",
        metadata={"reward": reward.pk, "rewardName": reward.name},
        request_hash=request_hash,
        apply_minimum=False,  # the partner priced the reward; the minimum is for tills
        now=now,
    )
    return RewardRedemption.objects.create(reward=reward, member=member, transaction=txn)
