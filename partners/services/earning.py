"""Recording purchases: the central rule engine that turns a purchase into points.

points = floor(eligible amount × base earn rate × tier multiplier × promotion multipliers)
         + fixed bonuses

- The eligible amount is the purchase amount, or the sum of the line items whose category the
  partner does not exclude (line items, when sent, must add up to the amount).
- Promotions apply when their window contains the purchase time and their conditions hold
  (minimum eligible spend, a basket category or SKU, the member's tier, the member's first
  purchase at the partner, the per-member limit). Multipliers multiply. An exclusive
  promotion is never combined: when any applies, the one adding the most points is the only
  promotion applied. A promotion with a budget never awards more than what is left of it.
- Base and tier points, and the partner's own promotions, are issued by the partner (it pays
  issuance at settlement); coalition-wide promotions and referral bonuses come from the
  operator's marketing account.

The transaction keeps the breakdown (`metadata["breakdown"]`) that partner and member read.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from coalition import services as ledger
from coalition.errors import CurrencyMismatch, InvalidInput, MemberNotActive, NotFound
from coalition.models import Account, LedgerTransaction, Member
from coalition.money import parse_amount

from .. import webhooks
from ..models import Partner, Promotion, PromotionAward, ReferralReward, Store
from .accounts import require_active_partner

REFERRAL_CALLER = "system:referral"
# A referral bonus is clawed back when its qualifying purchase is refunded in full within
# this many days (settings.COALITION["REFERRAL_CLAWBACK_DAYS"] overrides it).
REFERRAL_CLAWBACK_DAYS = 30
MAX_LINE_ITEMS = 500
MAX_AMOUNT = Decimal("100000000")
FUTURE_TOLERANCE = timedelta(minutes=5)
OLDEST_PURCHASE = timedelta(days=90)


@dataclass(frozen=True)
class LineItem:
    sku: str
    category: str
    quantity: int
    unit_price: Decimal

    @property
    def total(self) -> Decimal:
        return self.unit_price * self.quantity


@dataclass
class Component:
    """One part of the points of a purchase, as shown to partner and member."""

    kind: str  # base, tier, promotion
    label: str
    points: int
    funded_by: str  # partner or operator
    promotion_id: int | None = None
    multiplier: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "label": self.label,
            "points": self.points,
            "fundedBy": self.funded_by,
            "promotionId": self.promotion_id,
            "multiplier": self.multiplier,
        }


@dataclass
class Computation:
    eligible_amount: Decimal
    components: list[Component] = field(default_factory=list)

    @property
    def partner_points(self) -> int:
        return self.points_by_funder()[0]

    @property
    def operator_points(self) -> int:
        return self.points_by_funder()[1]

    @property
    def total(self) -> int:
        partner_points, operator_points = self.points_by_funder()
        return partner_points + operator_points

    def points_by_funder(self) -> tuple[int, int]:
        """(partner points, operator points), in one pass over the components."""
        partner_points = operator_points = 0
        for component in self.components:
            if component.funded_by == "partner":
                partner_points += component.points
            elif component.funded_by == "operator":
                operator_points += component.points
        return partner_points, operator_points


@dataclass
class PurchaseResult:
    transaction: LedgerTransaction | None
    points_awarded: int
    member: Member
    replayed: bool = False


# --------------------------------------------------------------------------- validation


def _parse_line_items(raw_items: list[dict] | None, currency: str) -> list[LineItem] | None:
    if raw_items is None:
        return None
    if not isinstance(raw_items, list | tuple) or len(raw_items) > MAX_LINE_ITEMS:
        raise InvalidInput(f"At most {MAX_LINE_ITEMS} line items", field="lineItems")
    items = []
    for index, raw in enumerate(raw_items):
        where = f"lineItems.{index}"
        if not isinstance(raw, dict):
            raise InvalidInput("A line item must be an object", field=where)
        sku = ledger.validate_text(raw.get("sku"), field=f"{where}.sku", required=True)
        category = ledger.validate_text(raw.get("category") or "", field=f"{where}.category")
        quantity = raw.get("quantity")
        if isinstance(quantity, bool) or not isinstance(quantity, int) or not 0 < quantity <= 10**6:
            raise InvalidInput("Quantity must be a whole number from 1", field=f"{where}.quantity")
        try:
            unit_price = parse_amount(raw.get("unit_price"), currency)
        except ValueError as exc:
            raise InvalidInput(str(exc), field=f"{where}.unitPrice") from exc
        if unit_price < 0 or unit_price > MAX_AMOUNT:
            raise InvalidInput("Unit price out of range", field=f"{where}.unitPrice")
        items.append(LineItem(sku, category.strip().lower(), quantity, unit_price))
    return items


def _validate_purchase(
    *, partner: Partner, amount: Any, currency: str, line_items: Any
) -> tuple[Decimal, list[LineItem] | None]:
    if currency != partner.currency:
        raise CurrencyMismatch(
            f"{partner.code} records purchases in {partner.currency}, not {currency}",
            field="currency",
        )
    try:
        parsed = parse_amount(amount, currency)
    except ValueError as exc:
        raise InvalidInput(f"Invalid amount: {exc}", field="amount") from exc
    if parsed <= 0:
        raise InvalidInput("The amount must be greater than zero", field="amount")
    if parsed > MAX_AMOUNT:
        raise InvalidInput("The amount is too large", field="amount")
    items = _parse_line_items(line_items, currency)
    if items is not None and sum((item.total for item in items), Decimal(0)) != parsed:
        raise InvalidInput("The line items do not add up to the amount", field="lineItems")
    return parsed, items


def _excluded_categories(partner: Partner) -> set[str]:
    return {str(category).strip().lower() for category in partner.excluded_categories or []}


def eligible_amount(partner: Partner, amount: Decimal, items: list[LineItem] | None) -> Decimal:
    """The amount that earns points: excluded categories (gift cards, tobacco…) don't."""
    if items is None:
        return amount
    excluded = _excluded_categories(partner)
    return sum((item.total for item in items if item.category not in excluded), Decimal(0))


def purchase_fingerprint(
    *,
    member_number: Any,
    customer_reference: Any,
    amount: str,
    currency: Any,
    reference: Any,
    store_code: Any,
    line_items: Any,
    occurred_at: Any,
) -> str:
    """`request_fingerprint("purchase_record", …)` of a purchase: the same hash.

    When every value is a string or None (a file's rows, most API calls) the JSON that
    `request_fingerprint` hashes is written here directly: its keys sorted, its compact
    separators, its escaping of strings (`encode_basestring_ascii`, the one its encoder
    uses); anything else goes through `request_fingerprint` itself."""
    values = (
        amount,
        currency,
        customer_reference,
        line_items,
        member_number,
        occurred_at,
        reference,
        store_code,
    )
    if set(map(type, values)) <= _STR_OR_NONE:
        body = _PURCHASE_JSON.format(
            *["null" if value is None else _json_string(value) for value in values]
        )
        return hashlib.sha256(body.encode()).hexdigest()
    return ledger.request_fingerprint(
        "purchase_record",
        member_number=member_number,
        customer_reference=customer_reference,
        amount=amount,
        currency=currency,
        reference=reference,
        store_code=store_code,
        line_items=line_items,
        occurred_at=occurred_at,
    )


# The keys in sorted order, as `json.dumps(sort_keys=True, separators=(",", ":"))` writes them.
_PURCHASE_JSON = (
    '{{"amount":{},"currency":{},"customer_reference":{},"line_items":{},"member_number":{},'
    '"occurred_at":{},"operation":"purchase_record","reference":{},"store_code":{}}}'
)
_json_string = json.encoder.encode_basestring_ascii
_STR_OR_NONE = frozenset({str, type(None)})


# --------------------------------------------------------------------------- the engine


@dataclass
class PurchaseContext:
    partner: Partner
    # None: the caller answered the promotions' member conditions itself (first purchase,
    # per-member limit, cross-brand) and passes only promotions without them (the batch).
    member: Member | None
    tier: Any
    occurred_at: datetime
    eligible: Decimal
    items: list[LineItem] | None


def _first_purchase_at_partner(context: PurchaseContext) -> bool:
    return not LedgerTransaction.objects.filter(
        member=context.member, partner=context.partner, kind=LedgerTransaction.Kind.EARN
    ).exists()


def _month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month_start(moment: datetime) -> datetime:
    start = _month_start(moment)
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


def _applies(promotion: Promotion, context: PurchaseContext) -> bool:
    """Do the promotion's conditions hold for this purchase?"""
    if promotion.min_spend is not None and context.eligible < promotion.min_spend:
        return False
    eligible_items = context.items or []
    if context.items is not None:
        excluded = _excluded_categories(context.partner)
        eligible_items = [item for item in context.items if item.category not in excluded]
    if promotion.categories:
        wanted = {str(category).strip().lower() for category in promotion.categories}
        if not any(item.category in wanted for item in eligible_items):
            return False
    if promotion.skus:
        skus = set(promotion.skus)
        if not any(item.sku in skus for item in eligible_items):
            return False
    tier_ids = _tier_ids(promotion)
    if tier_ids and (context.tier is None or context.tier.pk not in tier_ids):
        return False
    if (
        promotion.first_purchase_only
        or promotion.per_member_limit is not None
        or promotion.kind == Promotion.Kind.CROSS_BRAND
    ) and context.member is None:
        raise ValueError(f"promotion {promotion.pk} has member conditions: a member is needed")
    if promotion.first_purchase_only and not _first_purchase_at_partner(context):
        return False
    if promotion.per_member_limit is None and promotion.kind != Promotion.Kind.CROSS_BRAND:
        return True  # no condition left that reads the member's awards
    awards = PromotionAward.objects.filter(promotion=promotion, member=context.member)
    if promotion.per_member_limit is not None:
        if awards.count() >= promotion.per_member_limit:
            return False
    if promotion.kind == Promotion.Kind.CROSS_BRAND:
        # Awards and earns alike are dated by their ledger transaction, within the calendar
        # month of the purchase (not the award row's database clock, not open-ended).
        month_start = _month_start(context.occurred_at)
        month_end = _next_month_start(context.occurred_at)
        if awards.filter(
            transaction__created_at__gte=month_start, transaction__created_at__lt=month_end
        ).exists():
            return False
        earns_this_month = LedgerTransaction.objects.filter(
            member=context.member,
            kind=LedgerTransaction.Kind.EARN,
            created_at__gte=month_start,
            created_at__lt=month_end,
        )
        if earns_this_month.filter(partner=context.partner).exists():
            return False  # not the first purchase at this partner this month
        if not earns_this_month.exclude(partner=context.partner).exists():
            return False  # no other partner yet this month
    return True


def _tier_ids(promotion: Promotion) -> set[int]:
    """The ids of the tiers the promotion is limited to (none: every tier)."""
    # Prefetched (`promotions_in_force`): the prefetched rows, which is what
    # `promotion.tiers.all()` returns then, without building a related manager per purchase.
    prefetched = getattr(promotion, "_prefetched_objects_cache", None)
    tiers = prefetched.get("tiers") if prefetched else None
    if tiers is None:
        tiers = promotion.tiers.all()
    return {tier.pk for tier in tiers}


def _budget_left(promotion: Promotion) -> int | None:
    if promotion.budget_points is None:
        return None
    return max(promotion.budget_points - promotion.awarded_points, 0)


def compute_points(context: PurchaseContext, promotions: list[Promotion]) -> Computation:
    """The points for a purchase and their breakdown. Reads, never writes."""
    computation = Computation(eligible_amount=context.eligible)
    base_exact = context.eligible * context.partner.earn_rate
    base = math.floor(base_exact)
    computation.components.append(
        Component("base", f"{context.eligible} × {context.partner.earn_rate}", base, "partner")
    )
    running = base_exact
    if context.tier is not None and context.tier.earn_multiplier != 1:
        boosted = running * context.tier.earn_multiplier
        computation.components.append(
            Component(
                "tier",
                f"{context.tier.name} tier",
                math.floor(boosted) - math.floor(running),
                "partner",
                multiplier=str(context.tier.earn_multiplier),
            )
        )
        running = boosted

    if not promotions:
        return computation
    applicable = [p for p in promotions if _applies(p, context)]
    exclusive = [p for p in applicable if p.exclusive]
    if exclusive:
        # The exclusive adding the most points wins, counting only what its budget has left.
        applicable = [max(exclusive, key=lambda p: (_capped(p, running), -p.pk))]

    for promotion in sorted(applicable, key=lambda p: (p.kind != "multiplier", p.pk)):
        points = _capped(promotion, running)
        if promotion.kind == Promotion.Kind.MULTIPLIER:
            if points < _contribution(promotion, running):
                # Its budget ran out: later multipliers stack on what it really gave, not on
                # the multiplier it could no longer pay for.
                running = running + points
            else:
                running = running * promotion.multiplier
        if points <= 0:
            continue
        computation.components.append(
            Component(
                "promotion",
                promotion.name,
                points,
                "operator" if promotion.funded_by_operator else "partner",
                promotion_id=promotion.pk,
                multiplier=str(promotion.multiplier)
                if promotion.kind == Promotion.Kind.MULTIPLIER
                else None,
            )
        )
    return computation


def _capped(promotion: Promotion, running: Decimal) -> int:
    """The promotion's points on top of `running`, within what is left of its budget."""
    points = _contribution(promotion, running)
    budget = _budget_left(promotion)
    return points if budget is None else min(points, budget)


def _contribution(promotion: Promotion, running: Decimal) -> int:
    if promotion.kind == Promotion.Kind.MULTIPLIER:
        return math.floor(running * promotion.multiplier) - math.floor(running)
    return promotion.bonus_points


# --------------------------------------------------------------------------- recording


def purchase_record(
    *,
    partner: Partner,
    idempotency_key: str,
    amount: Any,
    currency: str,
    reference: str,
    member_number: str | None = None,
    customer_reference: str | None = None,
    store_code: str | None = None,
    line_items: list[dict] | None = None,
    occurred_at: datetime | None = None,
    now: datetime | None = None,
) -> PurchaseResult:
    """Record a purchase at a partner and award the points the programme's rules give.

    A retry with the same idempotency key and payload returns the first result.
    """
    caller = f"partner:{partner.pk}"
    ledger.validate_idempotency_key(idempotency_key)
    reference = ledger.validate_text(reference, field="reference", required=True)
    currency = ledger.validate_text(currency, field="currency", required=True)
    parsed_amount, items = _validate_purchase(
        partner=partner, amount=amount, currency=currency, line_items=line_items
    )
    now = now or timezone.now()
    occurred_at = occurred_at or now
    if occurred_at > now + FUTURE_TOLERANCE:
        raise InvalidInput("The purchase cannot be in the future", field="occurredAt")
    if occurred_at < now - OLDEST_PURCHASE:
        raise InvalidInput("The purchase is older than 90 days", field="occurredAt")
    request_hash = purchase_fingerprint(
        member_number=member_number,
        customer_reference=customer_reference,
        amount=str(parsed_amount.normalize()),
        currency=currency,
        reference=reference,
        store_code=store_code,
        line_items=[item.__dict__ for item in items] if items is not None else None,
        occurred_at=occurred_at.isoformat() if occurred_at is not now else None,
    )
    if replay := _purchase_replay(caller, idempotency_key, request_hash):
        return replay

    member = _resolve_member(partner, member_number, customer_reference)
    require_active_partner(partner)
    if member.status != Member.Status.ACTIVE:
        raise MemberNotActive(f"Member {member.member_number} is {member.status}")
    store = None
    if store_code:
        store = Store.objects.filter(partner=partner, code=store_code).first()
        if store is None:
            raise NotFound(f"No store {store_code} at {partner.code}", field="storeCode")
    return _post_purchase(
        partner=partner,
        member=member,
        caller=caller,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        amount=parsed_amount,
        currency=currency,
        reference=reference,
        items=items,
        store_code=store.code if store else None,
        occurred_at=occurred_at,
        now=now,
    )


def _purchase_replay(caller: str, key: str, request_hash: str) -> PurchaseResult | None:
    if not ledger.idempotency_key_used(caller=caller, idempotency_key=key):
        return None  # the usual case: one cheap query instead of loading two tables' rows
    txn = ledger.transaction_replay(caller=caller, idempotency_key=key, request_hash=request_hash)
    if txn is not None:
        return PurchaseResult(txn, txn.member_points, txn.member, replayed=True)
    record = ledger.idempotency_replay(
        caller=caller, idempotency_key=key, operation="purchase_record", request_hash=request_hash
    )
    if record is not None:
        return PurchaseResult(None, 0, Member.objects.get(pk=record.result_id), replayed=True)
    return None


def _resolve_member(
    partner: Partner, member_number: str | None, customer_reference: str | None
) -> Member:
    if member_number:
        from coalition.selectors import member_get_by_number

        return member_get_by_number(member_number=member_number)
    if customer_reference:
        from ..selectors import member_id_by_reference

        return Member.objects.get(
            pk=member_id_by_reference(partner=partner, customer_reference=customer_reference)
        )
    raise InvalidInput("A member number or customer reference is required", field="memberNumber")


@ledger.ledger_write
def _post_purchase(
    *,
    partner: Partner,
    member: Member,
    caller: str,
    idempotency_key: str,
    request_hash: str,
    amount: Decimal,
    currency: str,
    reference: str,
    items: list[LineItem] | None,
    store_code: str | None,
    occurred_at: datetime,
    now: datetime,
) -> PurchaseResult:
    referral_due = (
        member.referred_by_id is not None
        and ledger.programme_get().referral_bonus_points > 0
        and not ReferralReward.objects.filter(referee=member).exists()
    )
    ledger.wallets_lock(
        member_ids=[member.pk, member.referred_by_id] if referral_due else [member.pk]
    )
    if replay := _purchase_replay(caller, idempotency_key, request_hash):
        return replay
    # Read again under the wallet lock: a concurrent first purchase of the same member may
    # have given the referral bonus while we waited (the bonus is once only).
    referral_due = referral_due and not ReferralReward.objects.filter(referee=member).exists()
    promotions = _promotions_for(partner, occurred_at)
    budgeted = [promotion.pk for promotion in promotions if promotion.budget_points is not None]
    if budgeted:
        # Budgets are the one shared counter: lock just those promotions (after the wallet,
        # in id order) and read what is left of them now.
        awarded = dict(
            Promotion.objects.select_for_update()
            .filter(pk__in=budgeted)
            .order_by("pk")
            .values_list("pk", "awarded_points")
        )
        for promotion in promotions:
            promotion.awarded_points = awarded.get(promotion.pk, promotion.awarded_points)
    context = PurchaseContext(
        partner=partner,
        member=member,
        tier=ledger.member_tier(member=member),
        occurred_at=occurred_at,
        eligible=eligible_amount(partner, amount, items),
        items=items,
    )
    computation = compute_points(context, promotions)
    metadata = {
        "breakdown": [component.as_dict() for component in computation.components],
        "eligibleAmount": str(computation.eligible_amount),
        "occurredAt": occurred_at.isoformat(),
        "store": store_code,
        "lineItems": [
            {
                "sku": item.sku,
                "category": item.category,
                "quantity": item.quantity,
                "unitPrice": str(item.unit_price),
            }
            for item in items or []
        ],
    }
    if computation.total == 0:
        ledger.idempotency_record(
            caller=caller,
            idempotency_key=idempotency_key,
            operation="purchase_record",
            request_hash=request_hash,
            result_id=member.pk,
        )
        return PurchaseResult(None, 0, member)
    txn = ledger.points_earn(
        caller=caller,
        idempotency_key=idempotency_key,
        member=member,
        partner=partner,
        partner_points=computation.partner_points,
        operator_points=computation.operator_points,
        reference=reference,
        purchase_amount=amount,
        purchase_currency=currency,
        metadata=metadata,
        request_hash=request_hash,
        now=now,
    )
    awards = [c for c in computation.components if c.promotion_id is not None]
    for component in awards:
        # Only budgeted promotions keep a running counter (their rows are locked above
        # anyway). Bumping an unbudgeted coalition-wide promotion's row on every purchase
        # would make every till in the coalition queue on it; its total is the sum of its
        # awards.
        if component.promotion_id in budgeted:
            Promotion.objects.filter(pk=component.promotion_id).update(
                awarded_points=F("awarded_points") + component.points
            )
    PromotionAward.objects.bulk_create(
        [
            PromotionAward(
                promotion_id=c.promotion_id, member=member, transaction=txn, points=c.points
            )
            for c in awards
        ]
    )
    if referral_due:
        _referral_bonus(member, now)
    webhooks.event_record(
        partner=partner,
        type=webhooks.EventType.POINTS_EARNED,
        payload=lambda: webhooks.transaction_payload(txn),
    )
    # Charity round-up (issue 6): the member's chosen share of this earn is donated in this
    # same database transaction, under the wallet lock taken above; a refusal skips the
    # round-up only, never the earn. Imported here: partners does not depend on charity.
    from charity.services import round_up_donate

    round_up_donate(earn_transaction=txn, now=now)
    return PurchaseResult(txn, txn.member_points, member)


def _promotions_for(partner: Partner, moment: datetime) -> list[Promotion]:
    from ..selectors import promotions_in_force

    return promotions_in_force(partner=partner, moment=moment)


def _bonus_component(label: str, points: int) -> dict[str, Any]:
    return Component("bonus", label, points, "operator").as_dict()


def _referral_bonus(referee: Member, now: datetime) -> None:
    """Both referee and referrer get the programme's referral bonus, once (operator-funded)."""
    ReferralReward.objects.create(referee=referee, referrer_id=referee.referred_by_id)
    points = ledger.programme_get().referral_bonus_points
    for role, member in (("referee", referee), ("referrer", referee.referred_by)):
        if member.status != Member.Status.ACTIVE:
            continue
        ledger.points_earn(
            caller=REFERRAL_CALLER,
            idempotency_key=_referral_key(referee.pk, role),
            member=member,
            operator_points=points,
            kind=LedgerTransaction.Kind.BONUS,
            # Names no member: a member number is enough to redeem at a till, and the
            # referrer sees this reference in their history.
            reference="referral bonus",
            metadata={"breakdown": [_bonus_component("Referral bonus", points)]},
            now=now,
        )


def _referral_key(referee_id: int, role: str) -> str:
    return f"referral:{referee_id}:{role}"


# --------------------------------------------------------------------------- refunds


def earn_rewards_release_on_reversal(event: Any) -> None:
    """A reversal hook (`coalition.services.reversals`, after the reversal posts): a purchase
    refunded in full gives back what it used of promotions and of the referral bonus.

    - Promotions: its awards are removed and budgeted promotions' `awarded_points` lowered
      by them, so a refunded purchase uses up neither a per-member limit nor a budget (the
      points themselves went back to their funders with the reversal). A partial refund
      keeps the award: the purchase still happened.
    - Referral: when the refunded purchase is the one that gave the referral bonus, and
      it is refunded within REFERRAL_CLAWBACK_DAYS of it, both bonuses (referee's and
      referrer's) are reversed — each only as far as that member can spend now, so no
      wallet goes negative or below its holds over it; the rest is forgiven. The bonus
      stays given (once only): a later purchase of the referee does not give it again.
      After the window, or on a partial refund, the bonuses stay.
    """
    earn = event.original
    if earn.kind != LedgerTransaction.Kind.EARN or not event.fully_reversed:
        return
    _promotion_awards_release(earn)
    _referral_bonus_claw_back(earn, event.now)


def _promotion_awards_release(earn: LedgerTransaction) -> None:
    awards = list(PromotionAward.objects.filter(transaction=earn))
    if not awards:
        return
    released: dict[int, int] = {}
    for award in awards:
        released[award.promotion_id] = released.get(award.promotion_id, 0) + award.points
    # As `_post_purchase`: budgets are the shared counter, locked after the wallet, in id order.
    budgeted = (
        Promotion.objects.select_for_update()
        .filter(pk__in=list(released), budget_points__isnull=False)
        .order_by("pk")
        .values_list("pk", "awarded_points")
    )
    for promotion_id, awarded in list(budgeted):
        Promotion.objects.filter(pk=promotion_id).update(
            awarded_points=max(awarded - released[promotion_id], 0)
        )
    PromotionAward.objects.filter(pk__in=[award.pk for award in awards]).delete()


def _referral_bonus_claw_back(earn: LedgerTransaction, now: datetime) -> None:
    referee = Member.objects.filter(pk=earn.member_id).values("pk", "referred_by_id").first()
    if referee is None or referee["referred_by_id"] is None:
        return
    days = settings.COALITION.get("REFERRAL_CLAWBACK_DAYS", REFERRAL_CLAWBACK_DAYS)
    if now - earn.created_at > timedelta(days=days):
        return
    if not ReferralReward.objects.filter(referee_id=referee["pk"]).exists():
        return
    bonuses = list(
        LedgerTransaction.objects.filter(
            caller=REFERRAL_CALLER,
            idempotency_key__in=[
                _referral_key(referee["pk"], "referee"),
                _referral_key(referee["pk"], "referrer"),
            ],
            kind=LedgerTransaction.Kind.BONUS,
        ).order_by("member_id")
    )
    if not bonuses:
        return
    # The qualifying purchase: the referee's first earn posted with the bonus (the same
    # moment, in the same database transaction; in a batch, the member's first of it).
    qualifying = (
        LedgerTransaction.objects.filter(
            member_id=referee["pk"],
            kind=LedgerTransaction.Kind.EARN,
            created_at=bonuses[0].created_at,
            pk__lt=bonuses[0].pk,
        )
        .order_by("id")
        .values_list("id", flat=True)
        .first()
    )
    if qualifying != earn.pk:
        return
    # The referee's wallet is locked by the reversal; the referrer's is locked here. Nothing
    # else locks a referrer's wallet after its referee's, except this same path.
    wallets = ledger.wallets_lock(member_ids=[bonus.member_id for bonus in bonuses])
    for bonus in bonuses:
        wallet: Account = wallets[bonus.member_id]
        take = min(ledger.reversible_points(bonus), max(wallet.balance - wallet.held, 0))
        if take <= 0:
            continue
        ledger.transaction_reverse(
            caller=REFERRAL_CALLER,
            idempotency_key=f"referral-clawback:{bonus.pk}",
            transaction_to_reverse=bonus,
            points=take,
            reason=f"qualifying purchase {earn.pk} refunded",
            now=now,
        )
