"""Recording purchases in bulk: up to 1,000 purchases at one partner in one database
transaction, each with its own idempotency key, with the rules and error codes of
`purchase_record` and the points of the same rule engine (`compute_points`).

What is read once for the whole batch instead of once per purchase: earlier uses of the keys,
the members (by number, or by the partner's customer reference), stores, promotions in force,
tiers and tier states, the referral bonuses still due, and the facts the promotions' member
conditions need (first purchase at the partner, awards per member for per-member limits,
this month's earns and awards for cross-brand bonuses). The purchases are then computed one
after another in batch order, each seeing what the earlier ones of the batch did (a member's
second purchase is no longer their first; a promotion's budget shrinks; a member who crossed
a tier threshold earns at the new tier), so that a batch awards exactly the points the same
purchases recorded one by one, in the same order, would.

Locks, in the order single purchases take them: the wallets of every member concerned
(referrers of a referral bonus included) in member-id order, then the budgeted promotions in
id order. Then the earns are posted with `points_earn_batch`, and the follow-up work of
`_post_purchase` is done: promotion awards and budgets, referral bonuses, charity round-ups
and webhook events.

One difference with single purchases: round-ups are given after all the batch's earns, so a
member whose wallet a reversal had taken negative may see a round-up that single purchases
would have skipped (their balance was still negative after the first earn).
"""

from __future__ import annotations

import copy
import functools
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from coalition import services as ledger
from coalition.errors import (
    CoalitionError,
    IdempotencyConflict,
    InvalidInput,
    InvalidState,
    LimitExceeded,
    MemberNotActive,
    NotFound,
)
from coalition.models import IdempotencyRecord, LedgerTransaction, Member
from coalition.services.batch import (
    EarnRequest,
    OutcomeStatus,
    held_keys,
    idempotency_records_by_keys,
    member_tiers_by_member,
    points_earn_batch,
    qualifying_points_by_member,
    transactions_by_keys,
    wallets_lock_sorted,
)
from coalition.services.tiers import tier_for_points, tiers_ordered

from .. import webhooks
from ..models import Partner, PartnerIdentity, Promotion, PromotionAward, ReferralReward, Store
from .earning import (
    FUTURE_TOLERANCE,
    OLDEST_PURCHASE,
    LineItem,
    PurchaseContext,
    _month_start,
    _next_month_start,
    _referral_bonus,
    _validate_purchase,
    compute_points,
    eligible_amount,
    purchase_fingerprint,
)

MAX_PURCHASES = 1000
OPERATION = "purchase_record"
BATCH_OPERATION = "purchases_record_batch"
# The API's camelCase names are accepted as well as the service's own.
_ALIASES = {
    "idempotencyKey": "idempotency_key",
    "memberNumber": "member_number",
    "customerReference": "customer_reference",
    "storeCode": "store_code",
    "lineItems": "line_items",
    "occurredAt": "occurred_at",
}


@dataclass
class PurchaseOutcome:
    """What became of one purchase of a batch (in the batch's order).

    accepted: recorded now, or `replayed` (the key was used before for the same purchase),
    with the transaction (none when the purchase earned no points). rejected: nothing was
    written; `code`, `message` and `field` (`purchases.<i>.<field>`) say why.
    """

    index: int
    idempotency_key: str | None
    status: str  # "accepted" or "rejected"
    replayed: bool = False
    transaction_id: int | None = None
    points_awarded: int = 0
    member_id: int | None = None
    code: str | None = None
    message: str = ""
    field: str | None = None

    ACCEPTED = "accepted"
    REJECTED = "rejected"

    @property
    def accepted(self) -> bool:
        return self.status == self.ACCEPTED


@dataclass
class _Purchase:
    index: int
    key: str
    request_hash: str
    amount: Decimal
    currency: str
    reference: str
    items: list[LineItem] | None
    member_number: Any
    customer_reference: Any
    store_code: Any
    occurred_at: datetime
    member: _MemberRow | None = None  # once found (`member.instance()`: the model instance)


def _path(index: int, field: str | None) -> str:
    return f"purchases.{index}.{field}" if field else f"purchases.{index}"


def _rejected(index: int, key: Any, error: CoalitionError, member_id=None) -> PurchaseOutcome:
    return PurchaseOutcome(
        index=index,
        idempotency_key=key if isinstance(key, str) else None,
        status=PurchaseOutcome.REJECTED,
        member_id=member_id,
        code=str(error.code),
        message=error.message,
        field=_path(index, error.field),
    )


def _conflict(purchase: _Purchase) -> PurchaseOutcome:
    error = IdempotencyConflict(
        "This idempotency key was already used for a different request", field="idempotencyKey"
    )
    return _rejected(purchase.index, purchase.key, error)


def _occurred_at(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            parsed = parse_datetime(value.strip())
        except ValueError:
            parsed = None
        if parsed is None:
            raise InvalidInput("Not an ISO 8601 date and time", field="occurredAt")
        value = parsed
    if not isinstance(value, datetime):
        raise InvalidInput("Not a date and time", field="occurredAt")
    if timezone.is_naive(value):
        value = timezone.make_aware(value, timezone.get_default_timezone())
    return value


def _validate_one(
    partner: Partner,
    index: int,
    raw: Any,
    now: datetime,
    window: tuple[datetime, datetime] | None = None,
) -> _Purchase:
    """The checks `purchase_record` makes before it reads the database, in its order.

    `window`: (now - OLDEST_PURCHASE, now + FUTURE_TOLERANCE), worked out once per batch."""
    if not isinstance(raw, dict):
        raise InvalidInput("A purchase must be an object")
    if not _ALIASES.keys().isdisjoint(raw):
        data = {_ALIASES.get(name, name): value for name, value in raw.items()}
    else:
        data = raw  # only read below: the usual case (a file's rows) needs no copy
    get = data.get
    key = get("idempotency_key")
    ledger.validate_idempotency_key(key)
    reference = ledger.validate_text(get("reference"), field="reference", required=True)
    currency = ledger.validate_text(get("currency"), field="currency", required=True)
    amount, items = _validate_purchase(
        partner=partner, amount=get("amount"), currency=currency, line_items=get("line_items")
    )
    occurred = get("occurred_at")
    given_at = None if occurred is None else _occurred_at(occurred)
    if given_at is None:
        occurred_at = now  # within its own window: nothing to check
    else:
        occurred_at = given_at
        oldest, latest = window or (now - OLDEST_PURCHASE, now + FUTURE_TOLERANCE)
        if occurred_at > latest:
            raise InvalidInput("The purchase cannot be in the future", field="occurredAt")
        if occurred_at < oldest:
            raise InvalidInput("The purchase is older than 90 days", field="occurredAt")
    member_number = get("member_number")
    customer_reference = get("customer_reference")
    store_code = get("store_code")
    # The same fingerprint as `purchase_record`: a purchase sent in a batch and then alone
    # (or the other way round) with the same key is the same request.
    request_hash = purchase_fingerprint(
        member_number=member_number,
        customer_reference=customer_reference,
        amount=str(amount.normalize()),
        currency=currency,
        reference=reference,
        store_code=store_code,
        line_items=[item.__dict__ for item in items] if items is not None else None,
        occurred_at=given_at.isoformat() if given_at is not None else None,
    )
    return _Purchase(
        index,
        key,
        request_hash,
        amount,
        currency,
        reference,
        items,
        member_number,
        customer_reference,
        store_code,
        occurred_at,
    )


def purchases_record_batch(
    *,
    partner: Partner,
    purchases: list[dict],
    idempotency_key: str | None = None,
    now: datetime | None = None,
    busy_wallets_last: bool = False,
) -> list[PurchaseOutcome]:
    """Record up to 1,000 purchases at a partner; one outcome per purchase, in order.

    Each purchase is what `purchase_record` takes (`idempotency_key`, `amount`, `currency`,
    `reference`, `member_number` or `customer_reference`, optional `store_code`,
    `line_items`, `occurred_at`; the API's camelCase names work too). A rejected purchase
    writes nothing and does not stop the others. A purchase sent again with its key is
    replayed (same transaction); within the batch the first purchase with a key wins.

    With the batch's own `idempotency_key` (the API always sends one), the batch is
    recorded once per partner and key: the same batch sent again returns the outcomes of
    the first time and writes nothing; the key sent with other purchases raises
    `IdempotencyConflict` and writes nothing; of two concurrent requests with the key, the
    second waits for the first and replays it. A batch that records no purchase keeps no
    key, as a refused single write does not.

    `busy_wallets_last` (a purchase file's chunk, which has no batch key): the purchases
    whose wallets another transaction holds are not waited for; the others are recorded and
    committed first, then those in a second database transaction that waits for the wallets.
    Two workers recording chunks of one file then never wait for each other's whole chunk
    because they share a few members; each purchase is still recorded once (its own key).
    """
    if idempotency_key is not None:
        ledger.validate_idempotency_key(idempotency_key)
    if not isinstance(purchases, list | tuple):
        raise InvalidInput("A list of purchases is required", field="purchases")
    if len(purchases) > MAX_PURCHASES:
        raise LimitExceeded(
            f"At most {MAX_PURCHASES} purchases may be recorded at once", field="purchases"
        )
    caller = f"partner:{partner.pk}"
    if idempotency_key is None:
        return _purchases_record(
            partner=partner,
            caller=caller,
            purchases=purchases,
            now=now,
            busy_wallets_last=busy_wallets_last,
        )
    if busy_wallets_last:
        raise ValueError("a batch under its own key is recorded in one database transaction")
    return _batch_record_once(
        partner=partner,
        caller=caller,
        idempotency_key=idempotency_key,
        purchases=purchases,
        now=now,
    )


@ledger.ledger_write
def _batch_record_once(
    *,
    partner: Partner,
    caller: str,
    idempotency_key: str,
    purchases: list | tuple,
    now: datetime | None,
) -> list[PurchaseOutcome]:
    """The batch under its own key, in one database transaction with its purchases.

    The key is claimed (its `coalition_idempotency` row written) before any purchase is
    recorded: a concurrent request with the same key waits on that row's unique index until
    this transaction ends, then fails with a unique violation, and `ledger_write` runs it
    once more, when it finds the row and replays. A batch that fails as a whole rolls the
    row back with everything else; one that records no purchase (each refused, or a replay
    of its own key) gives the row up.
    """
    request_hash = _batch_fingerprint(purchases)
    first = ledger.idempotency_replay(
        caller=caller,
        idempotency_key=idempotency_key,
        operation=BATCH_OPERATION,
        request_hash=request_hash,
    )
    if first is not None:
        return _batch_replay(
            partner=partner, caller=caller, purchases=purchases, first_at=first.created_at
        )
    claim = ledger.idempotency_record(
        caller=caller,
        idempotency_key=idempotency_key,
        operation=BATCH_OPERATION,
        request_hash=request_hash,
        result_id=None,
    )
    outcomes = _purchases_record(partner=partner, caller=caller, purchases=purchases, now=now)
    if not any(outcome.accepted and not outcome.replayed for outcome in outcomes):
        # Nothing new was written: like a refused single write, the batch leaves no trace
        # and its key stays free for the batch once corrected.
        claim.delete()
    return outcomes


def _batch_fingerprint(purchases: list | tuple) -> str:
    """What the batch asked for, purchase by purchase and in order, as the caller sent it
    (camelCase and snake_case names are the same field)."""
    return ledger.request_fingerprint(
        BATCH_OPERATION,
        purchases=[
            {_ALIASES.get(name, name): value for name, value in raw.items()}
            if isinstance(raw, dict)
            else raw
            for raw in purchases
        ],
    )


def _batch_replay(
    *, partner: Partner, caller: str, purchases: list | tuple, first_at: datetime
) -> list[PurchaseOutcome]:
    """The outcomes of a batch already recorded under its key, writing nothing.

    Only the batch's key is stored, not its outcomes: they are worked out again by the
    batch's own code, at the moment of the first request, in a savepoint that is rolled
    back. A purchase accepted the first time is found by its own key (the same transaction
    and points, `replayed`); one refused the first time wrote nothing and is refused again
    for the same reason. Should that reason have gone since (the member was enrolled in
    between, say), it is still refused: the batch is not recorded twice.
    """
    with transaction.atomic():
        outcomes = _purchases_record(
            partner=partner, caller=caller, purchases=purchases, now=first_at
        )
        transaction.set_rollback(True)  # the second look must leave no trace
    # Accepted now but not found by its key: it was refused the first time (and so are its
    # repeats within the batch, which took its result).
    refused_at_first = {
        outcome.idempotency_key for outcome in outcomes if outcome.accepted and not outcome.replayed
    }
    return [
        _refused_at_first(outcome)
        if outcome.accepted and outcome.idempotency_key in refused_at_first
        else outcome
        for outcome in outcomes
    ]


def _refused_at_first(outcome: PurchaseOutcome) -> PurchaseOutcome:
    error = InvalidState(
        "This purchase was refused when this batch was first recorded; "
        "send it in a new batch to record it"
    )
    return _rejected(outcome.index, outcome.idempotency_key, error, outcome.member_id)


def _purchases_record(
    *,
    partner: Partner,
    caller: str,
    purchases: list | tuple,
    now: datetime | None,
    busy_wallets_last: bool = False,
) -> list[PurchaseOutcome]:
    """Validate every purchase, record the valid ones, and give repeats within the batch
    the result of their first occurrence (`busy_wallets_last`: see purchases_record_batch)."""
    now = now or timezone.now()
    outcomes: list[PurchaseOutcome | None] = [None] * len(purchases)
    firsts: list[_Purchase] = []
    first_of_key: dict[str, _Purchase] = {}
    duplicates: list[tuple[_Purchase, _Purchase]] = []
    window = (now - OLDEST_PURCHASE, now + FUTURE_TOLERANCE)
    for index, raw in enumerate(purchases):
        try:
            purchase = _validate_one(partner, index, raw, now, window)
        except CoalitionError as error:
            key = (
                raw.get("idempotency_key", raw.get("idempotencyKey"))
                if isinstance(raw, dict)
                else None
            )
            outcomes[index] = _rejected(index, key, error)
            continue
        first = first_of_key.get(purchase.key)
        if first is None:
            first_of_key[purchase.key] = purchase
            firsts.append(purchase)
        elif first.request_hash == purchase.request_hash:
            duplicates.append((purchase, first))
        else:
            outcomes[index] = _conflict(purchase)

    outcomes = _record(
        partner=partner,
        caller=caller,
        purchases=firsts,
        outcomes=outcomes,
        now=now,
        skip_busy=busy_wallets_last,
    )
    waiting = [purchase for purchase in firsts if outcomes[purchase.index] is None]
    if waiting:
        # Their wallets were busy: now in a transaction of their own, waiting for them.
        outcomes = _record(
            partner=partner, caller=caller, purchases=waiting, outcomes=outcomes, now=now
        )
    for purchase, first in duplicates:
        outcomes[purchase.index] = _repeat_of(outcomes[first.index], purchase.index)
    return outcomes  # type: ignore[return-value]


def _repeat_of(earlier: PurchaseOutcome, index: int) -> PurchaseOutcome:
    """A purchase repeated within the batch gets the first one's result, as a replay."""
    outcome = copy.copy(earlier)
    outcome.index = index
    outcome.replayed = earlier.accepted
    if earlier.field is not None:
        rest = earlier.field.split(".", 2)[2:]  # what follows "purchases.<i>"
        outcome.field = _path(index, rest[0] if rest else None)
    return outcome


# --------------------------------------------------------------------------- the batch


def _settle_replays(
    caller: str, purchases: list[_Purchase], outcomes: list[PurchaseOutcome | None]
) -> list[_Purchase]:
    """Purchases whose key was used before are replayed (or refused); the rest is returned.

    Both kinds of first result count: the earn transaction, or the record of a purchase
    that earned nothing.
    """
    keys = [purchase.key for purchase in purchases]
    if not keys:
        return []
    used = transactions_by_keys(caller=caller, keys=keys)
    missing = [key for key in keys if key not in used]
    records = idempotency_records_by_keys(caller=caller, keys=missing) if missing else {}
    # A key this caller used for a hold is refused (unique per caller across writes).
    held = held_keys(caller=caller, keys=[key for key in missing if key not in records])
    left = []
    for purchase in purchases:
        if purchase.key in held:
            outcomes[purchase.index] = _conflict(purchase)
        elif (hit := used.get(purchase.key)) is not None:
            if hit[0] != purchase.request_hash:
                outcomes[purchase.index] = _conflict(purchase)
                continue
            outcomes[purchase.index] = PurchaseOutcome(
                index=purchase.index,
                idempotency_key=purchase.key,
                status=PurchaseOutcome.ACCEPTED,
                replayed=True,
                transaction_id=hit[1],
                points_awarded=hit[2],
                member_id=hit[3],
            )
        elif (record := records.get(purchase.key)) is not None:
            if record[0] != OPERATION or record[1] != purchase.request_hash:
                outcomes[purchase.index] = _conflict(purchase)
                continue
            outcomes[purchase.index] = PurchaseOutcome(
                index=purchase.index,
                idempotency_key=purchase.key,
                status=PurchaseOutcome.ACCEPTED,
                replayed=True,
                member_id=record[2],
            )
        else:
            left.append(purchase)
    return left


class _MemberRow:
    """A member found for the batch: the row as read, with what the batch looks at as
    attributes; the model instance is made from it only when needed (a referral bonus, the
    follow-up work on a posted transaction), as most purchases never need one."""

    __slots__ = ("pk", "member_number", "status", "referred_by_id", "_db", "_values", "_member")

    def __init__(self, db: str, values: tuple) -> None:
        pk, member_number, status, referred_by_id = _member_columns()[1]
        self.pk = values[pk]
        self.member_number = values[member_number]
        self.status = values[status]
        self.referred_by_id = values[referred_by_id]
        self._db = db
        self._values = values
        self._member: Member | None = None

    def instance(self) -> Member:
        """The member as the model instance a query would have given (made once)."""
        if self._member is None:
            self._member = Member.from_db(self._db, _member_columns()[0], self._values)
        return self._member


@functools.cache
def _member_columns() -> tuple[list[str], tuple[int, int, int, int]]:
    """Every column of a member, in the model's order (what `Model.from_db` takes), and
    where id, member number, status and referrer are among them."""
    names = [field.attname for field in Member._meta.concrete_fields]
    where = ("id", "member_number", "status", "referred_by_id")
    return names, tuple(names.index(name) for name in where)  # type: ignore[return-value]


def _member_rows(members) -> list[_MemberRow]:
    """The members of a queryset as rows (no model instances)."""
    return [_MemberRow(members.db, values) for values in members.values_list(*_member_columns()[0])]


def _resolve_members(
    partner: Partner, purchases: list[_Purchase], outcomes: list[PurchaseOutcome | None]
) -> list[_Purchase]:
    """Find every purchase's member in (at most) two queries, as `_resolve_member` would."""
    numbers = {
        p.member_number
        for p in purchases
        if p.member_number and isinstance(p.member_number, str) and p.member_number.isdigit()
    }
    by_number = {
        m.member_number: m
        for m in (
            _member_rows(Member.objects.filter(member_number__any=list(numbers))) if numbers else ()
        )
    }
    references = {
        p.customer_reference
        for p in purchases
        if not p.member_number and p.customer_reference and isinstance(p.customer_reference, str)
    }
    by_reference: dict[str, _MemberRow] = {}
    if references:
        linked = dict(
            PartnerIdentity.objects.filter(
                partner=partner, customer_reference__any=list(references)
            ).values_list("customer_reference", "member_id")
        )
        ids = set(linked.values())
        members = {m.pk: m for m in _member_rows(Member.objects.filter(pk__any=list(ids)))}
        by_reference = {ref: members[member_id] for ref, member_id in linked.items()}
    found = []
    for purchase in purchases:
        if purchase.member_number:
            purchase.member = by_number.get(purchase.member_number)
        elif purchase.customer_reference:
            purchase.member = by_reference.get(purchase.customer_reference)
        else:
            purchase.member = None
        if purchase.member is not None:
            found.append(purchase)
            continue
        if purchase.member_number:
            error = NotFound("No member with this number", field="memberNumber")
        elif purchase.customer_reference:
            error = NotFound(
                "No member is linked to this customer reference", field="customerReference"
            )
        else:
            error = InvalidInput(
                "A member number or customer reference is required", field="memberNumber"
            )
        outcomes[purchase.index] = _rejected(purchase.index, purchase.key, error)
    return found


@dataclass
class _Facts:
    """What the promotions' member conditions ask of the ledger, for the batch's members,
    kept up to date as the batch's purchases are computed one after another."""

    earned_at_partner: set[int]
    award_counts: Counter
    # Cross-brand: per calendar month [start, end) of a purchase.
    months: list[tuple[datetime, datetime]]
    earned_here: dict[tuple[datetime, datetime], set[int]]
    earned_elsewhere: dict[tuple[datetime, datetime], set[int]]
    cross_awarded: dict[tuple[int, tuple[datetime, datetime]], set[int]]


def _facts(partner: Partner, promotions: list[Promotion], purchases: list[_Purchase]) -> _Facts:
    member_ids = sorted({p.member.pk for p in purchases})
    first_only = any(p.first_purchase_only for p in promotions)
    cross_brand = [p for p in promotions if p.kind == Promotion.Kind.CROSS_BRAND]
    # Built only when asked: a filter on the batch's members costs a visit to each of them.
    earns = (
        LedgerTransaction.objects.filter(
            member_id__any=list(member_ids), kind=LedgerTransaction.Kind.EARN
        ).order_by()
        if first_only or cross_brand
        else None
    )
    earned_at_partner: set[int] = set()
    if first_only:
        earned_at_partner = set(
            earns.filter(partner=partner).values_list("member_id", flat=True).distinct()
        )
    award_counts: Counter = Counter()
    limited = [p.pk for p in promotions if p.per_member_limit is not None]
    if limited:
        rows = PromotionAward.objects.filter(
            promotion_id__in=limited, member_id__any=list(member_ids)
        ).values_list("promotion_id", "member_id")
        award_counts.update(rows)
    months: list[tuple[datetime, datetime]] = []
    earned_here: dict = {}
    earned_elsewhere: dict = {}
    cross_awarded: dict = {}
    if cross_brand:
        months = sorted(
            {(_month_start(p.occurred_at), _next_month_start(p.occurred_at)) for p in purchases}
        )
        for month in months:
            in_month = earns.filter(created_at__gte=month[0], created_at__lt=month[1])
            earned_here[month] = set(
                in_month.filter(partner=partner).values_list("member_id", flat=True)
            )
            # As `_applies`: exclude(partner=…) keeps earns with no partner.
            earned_elsewhere[month] = set(
                in_month.exclude(partner=partner).values_list("member_id", flat=True)
            )
            for promotion in cross_brand:
                cross_awarded[(promotion.pk, month)] = set(
                    PromotionAward.objects.filter(
                        promotion=promotion,
                        member_id__any=list(member_ids),
                        transaction__created_at__gte=month[0],
                        transaction__created_at__lt=month[1],
                    ).values_list("member_id", flat=True)
                )
    return _Facts(
        earned_at_partner, award_counts, months, earned_here, earned_elsewhere, cross_awarded
    )


def _member_conditions_hold(promotion: Promotion, purchase: _Purchase, facts: _Facts) -> bool:
    """The conditions of `_applies` that read the ledger, answered from the facts."""
    member_id = purchase.member.pk
    if promotion.first_purchase_only and member_id in facts.earned_at_partner:
        return False
    if (
        promotion.per_member_limit is not None
        and facts.award_counts[(promotion.pk, member_id)] >= promotion.per_member_limit
    ):
        return False
    if promotion.kind == Promotion.Kind.CROSS_BRAND:
        month = (_month_start(purchase.occurred_at), _next_month_start(purchase.occurred_at))
        if member_id in facts.cross_awarded[(promotion.pk, month)]:
            return False
        if member_id in facts.earned_here[month]:
            return False  # not the first purchase at this partner this month
        if member_id not in facts.earned_elsewhere[month]:
            return False  # no other partner yet this month
    return True


def _has_member_conditions(promotion: Promotion) -> bool:
    return (
        promotion.first_purchase_only
        or promotion.per_member_limit is not None
        or promotion.kind == Promotion.Kind.CROSS_BRAND
    )


def _without_member_conditions(promotion: Promotion) -> Promotion:
    """A copy `_applies` judges on its other conditions only (without a query), the member
    conditions having been answered from the facts. A cross-brand bonus counts as the fixed
    bonus it is for the engine (its points are `bonus_points`, it is not a multiplier)."""
    clone = copy.copy(promotion)
    clone.first_purchase_only = False
    clone.per_member_limit = None
    if clone.kind == Promotion.Kind.CROSS_BRAND:
        clone.kind = Promotion.Kind.FIXED_BONUS
    return clone


@ledger.ledger_write
def _record(
    *,
    partner: Partner,
    caller: str,
    purchases: list[_Purchase],
    outcomes: list[PurchaseOutcome | None],
    now: datetime,
    skip_busy: bool = False,
) -> list[PurchaseOutcome | None]:
    """Record the purchases in one database transaction. `skip_busy`: the purchases whose
    wallet (or the wallet of a referrer due a bonus) another transaction holds are left
    out, their outcome None, for the caller to record after this transaction."""
    outcomes = list(outcomes)  # a retried attempt starts again from the validated batch
    purchases = _settle_replays(caller, purchases, outcomes)
    purchases = _resolve_members(partner, purchases, outcomes)
    if not purchases:
        return outcomes
    if partner.status != Partner.Status.ACTIVE:
        error = InvalidState(f"Partner {partner.code} is suspended", field="partner")
        for purchase in purchases:
            outcomes[purchase.index] = _rejected(purchase.index, purchase.key, error)
        return outcomes

    programme = ledger.programme_get()
    referral_points = programme.referral_bonus_points
    referees = {p.member.pk: p.member for p in purchases if p.member.referred_by_id}
    referral_due = _referrals_due(referees) if referral_points > 0 else set()
    lock_ids = {p.member.pk for p in purchases} | {
        referees[member_id].referred_by_id for member_id in referral_due
    }
    wallets = wallets_lock_sorted(member_ids=sorted(lock_ids), skip_locked=skip_busy)
    if skip_busy and len(wallets) < len(lock_ids):
        busy = lock_ids - wallets.keys()
        purchases = [
            purchase
            for purchase in purchases
            if purchase.member.pk not in busy
            and not (purchase.member.pk in referral_due and purchase.member.referred_by_id in busy)
        ]  # the others keep outcome None: the caller records them once this one commits
        if not purchases:
            return outcomes
    if not skip_busy:
        # Under the wallet locks: a concurrent request may have used one of our keys while
        # we waited. (With skip_busy nothing was waited for: the look-up just before the lock
        # stands. A request with one of our keys committing in the few milliseconds between
        # ends in a unique violation on the key, and ledger_write records the batch once
        # more, which then replays it.)
        purchases = _settle_replays(caller, purchases, outcomes)
    # A concurrent first purchase of a referee may have given its referral bonus meanwhile.
    referral_due = _referrals_due({m: referees[m] for m in referral_due})

    ready = []
    for purchase in purchases:
        member = purchase.member
        status = wallets[member.pk][2] if member.pk in wallets else member.status
        if status != Member.Status.ACTIVE:
            error = MemberNotActive(f"Member {member.member_number} is {status}")
            outcomes[purchase.index] = _rejected(purchase.index, purchase.key, error, member.pk)
        else:
            ready.append(purchase)
    purchases = _check_stores(partner, ready, outcomes)
    if not purchases:
        return outcomes

    promotions = _promotions_locked(partner, purchases)
    computed = _compute(
        partner, purchases, promotions, wallets, referral_due, referees, referral_points, now
    )
    _post(partner, caller, computed, promotions, wallets, outcomes, now)
    _follow_up(partner, computed, referral_due, now)
    return outcomes


def _referrals_due(referees: dict[int, _MemberRow]) -> set[int]:
    if not referees:
        return set()
    given = set(
        ReferralReward.objects.filter(referee_id__in=list(referees)).values_list(
            "referee_id", flat=True
        )
    )
    return set(referees) - given


def _check_stores(
    partner: Partner, purchases: list[_Purchase], outcomes: list[PurchaseOutcome | None]
) -> list[_Purchase]:
    codes = {p.store_code for p in purchases if p.store_code}
    known = set()
    if codes:
        known = set(
            Store.objects.filter(partner=partner, code__in=codes).values_list("code", flat=True)
        )
    ready = []
    for purchase in purchases:
        if purchase.store_code and purchase.store_code not in known:
            error = NotFound(f"No store {purchase.store_code} at {partner.code}", field="storeCode")
            outcomes[purchase.index] = _rejected(
                purchase.index, purchase.key, error, purchase.member.pk
            )
        else:
            ready.append(purchase)
    return ready


def _promotions_locked(partner: Partner, purchases: list[_Purchase]) -> list[Promotion]:
    """Every promotion in force at any of the purchases' moments (`promotions_in_force`
    over the batch's window), the budgeted ones locked in id order and read again."""
    earliest = min(p.occurred_at for p in purchases)
    latest = max(p.occurred_at for p in purchases)
    promotions = list(
        Promotion.objects.filter(
            Q(partner=partner) | Q(partner__isnull=True),
            active=True,
            starts_at__lte=latest,
            ends_at__gt=earliest,
        )
        .prefetch_related("tiers")
        .order_by("id")
    )
    budgeted = [p.pk for p in promotions if p.budget_points is not None]
    if budgeted:
        awarded = dict(
            Promotion.objects.select_for_update()
            .filter(pk__in=budgeted)
            .order_by("pk")
            .values_list("pk", "awarded_points")
        )
        for promotion in promotions:
            promotion.awarded_points = awarded.get(promotion.pk, promotion.awarded_points)
    return promotions


@dataclass
class _Computed:
    purchase: _Purchase
    computation: Any
    metadata: dict
    referral: bool = False  # this purchase gives the member's referral bonus
    posted: Any = None  # its BatchOutcome, once posted
    partner_points: int = 0
    operator_points: int = 0
    total: int = 0

    @property
    def transaction(self) -> LedgerTransaction:
        txn = self.posted.transaction
        txn.member = self.purchase.member.instance()  # for the webhook payload, no query
        return txn


def _compute(
    partner: Partner,
    purchases: list[_Purchase],
    promotions: list[Promotion],
    wallets: dict[int, tuple[int, int, str]],
    referral_due: set[int],
    referees: dict[int, _MemberRow],
    referral_points: int,
    now: datetime,
) -> list[_Computed]:
    """The points of every purchase, in batch order, each seeing the earlier ones."""
    facts = _facts(partner, promotions, purchases)
    member_ids = sorted({p.member.pk for p in purchases})
    tiers = tiers_ordered()
    states = member_tiers_by_member(member_ids=member_ids) if tiers else {}
    tier_of = {
        member_id: (states[member_id].tier if member_id in states else tiers[0]) if tiers else None
        for member_id in member_ids
    }
    # Qualifying points matter only to members whose tier may change before their next
    # purchase of the batch: those with several purchases, and referrers who buy too.
    qualifying: dict[int, int] = {}
    if len(tiers) >= 2:
        repeat = Counter(p.member.pk for p in purchases)
        referrers = {referees[m].referred_by_id for m in referral_due}
        tracked = [m for m in member_ids if repeat[m] > 1 or m in referrers]
        if tracked:
            found = qualifying_points_by_member(member_ids=tracked, now=now)
            qualifying = {m: found.get(m, 0) for m in tracked}

    def gain(member_id: int, points: int) -> None:
        """`member_tier_upgrade` after an earn, in memory."""
        if member_id not in qualifying:
            return
        qualifying[member_id] += points
        reached = tier_for_points(tiers, qualifying[member_id])
        if reached is not None and reached.qualifying_points > tier_of[member_id].qualifying_points:
            tier_of[member_id] = reached

    by_pk = {p.pk: p for p in promotions}
    max_points = settings.COALITION["MAX_POINTS_PER_TRANSACTION"]
    # Purchases without their own time share the batch's `now` (the same object): one
    # isoformat() for a run of them. (By identity: equal moments in other time zones differ.)
    last_moment: list = [None, ""]

    def isoformat(moment: datetime) -> str:
        if moment is not last_moment[0]:
            last_moment[:] = [moment, moment.isoformat()]
        return last_moment[1]

    now_months = [month for month in facts.months if month[0] <= now < month[1]]
    referral_left = set(referral_due)
    computed = []
    for purchase in purchases:
        member = purchase.member
        in_force = []
        for promotion in promotions:
            if not promotion.starts_at <= purchase.occurred_at < promotion.ends_at:
                continue
            if _has_member_conditions(promotion):
                if not _member_conditions_hold(promotion, purchase, facts):
                    continue
                promotion = _without_member_conditions(promotion)
            in_force.append(promotion)
        context = PurchaseContext(
            partner=partner,
            member=None,  # the member conditions were answered above, from the facts
            tier=tier_of[member.pk],
            occurred_at=purchase.occurred_at,
            eligible=eligible_amount(partner, purchase.amount, purchase.items),
            items=purchase.items,
        )
        computation = compute_points(context, in_force)
        item = _Computed(purchase, computation, _metadata(purchase, computation, isoformat))
        item.partner_points, item.operator_points = computation.points_by_funder()
        item.total = item.partner_points + item.operator_points
        computed.append(item)
        if item.total == 0:
            continue
        if not 0 < item.total <= max_points:  # as `validate_points`
            continue  # refused when posted; it changes nothing for the next purchases
        # What this earn changes for the batch's next purchases.
        facts.earned_at_partner.add(member.pk)
        for month in now_months:
            facts.earned_here[month].add(member.pk)
        for component in computation.components:
            if component.promotion_id is None:
                continue
            promotion = by_pk[component.promotion_id]
            facts.award_counts[(promotion.pk, member.pk)] += 1
            promotion.awarded_points += component.points
            if promotion.kind == Promotion.Kind.CROSS_BRAND:
                for month in now_months:
                    facts.cross_awarded[(promotion.pk, month)].add(member.pk)
        gain(member.pk, item.total)
        if member.pk in referral_left:
            referral_left.discard(member.pk)
            item.referral = True
            gain(member.pk, referral_points)
            referrer_id = member.referred_by_id
            if wallets.get(referrer_id, (0, 0, ""))[2] == Member.Status.ACTIVE:
                gain(referrer_id, referral_points)
    return computed


def _metadata(purchase: _Purchase, computation: Any, isoformat=datetime.isoformat) -> dict:
    """The transaction's metadata, as `_post_purchase` writes it."""
    return {
        "breakdown": [component.as_dict() for component in computation.components],
        "eligibleAmount": str(computation.eligible_amount),
        "occurredAt": isoformat(purchase.occurred_at),
        "store": purchase.store_code or None,
        "lineItems": [
            {
                "sku": item.sku,
                "category": item.category,
                "quantity": item.quantity,
                "unitPrice": str(item.unit_price),
            }
            for item in purchase.items or []
        ],
    }


def _post(
    partner: Partner,
    caller: str,
    computed: list[_Computed],
    promotions: list[Promotion],
    wallets: dict[int, tuple[int, int, str]],
    outcomes: list[PurchaseOutcome | None],
    now: datetime,
) -> None:
    earning = [item for item in computed if item.total > 0]
    nothing = [item for item in computed if item.total == 0]
    if nothing:
        IdempotencyRecord.objects.bulk_create(
            [
                IdempotencyRecord(
                    caller=caller,
                    idempotency_key=item.purchase.key,
                    operation=OPERATION,
                    request_hash=item.purchase.request_hash,
                    result_id=item.purchase.member.pk,
                )
                for item in nothing
            ]
        )
        for item in nothing:
            outcomes[item.purchase.index] = PurchaseOutcome(
                index=item.purchase.index,
                idempotency_key=item.purchase.key,
                status=PurchaseOutcome.ACCEPTED,
                member_id=item.purchase.member.pk,
            )
    if not earning:
        return
    results = points_earn_batch(
        caller=caller,
        partner=partner,
        requests=[
            EarnRequest(
                member_id=item.purchase.member.pk,
                idempotency_key=item.purchase.key,
                partner_points=item.partner_points,
                operator_points=item.operator_points,
                request_hash=item.purchase.request_hash,
                reference=item.purchase.reference,
                purchase_amount=item.purchase.amount,
                purchase_currency=item.purchase.currency,
                metadata=item.metadata,
            )
            for item in earning
        ],
        now=now,
        # Locked above, and the keys looked up under those locks.
        locked_wallets=wallets,
        # Keys, references, points and hashes checked or made above, the partner active.
        validated=True,
    )
    awards = []
    budget_spent: Counter = Counter()
    budgeted = {p.pk for p in promotions if p.budget_points is not None}
    for item, result in zip(earning, results, strict=True):
        purchase = item.purchase
        if result.status == OutcomeStatus.REJECTED:
            error = CoalitionError(result.message, field=result.field, code=result.code)
            outcomes[purchase.index] = _rejected(
                purchase.index, purchase.key, error, purchase.member.pk
            )
            continue
        outcomes[purchase.index] = PurchaseOutcome(
            index=purchase.index,
            idempotency_key=purchase.key,
            status=PurchaseOutcome.ACCEPTED,
            replayed=result.status == OutcomeStatus.REPLAYED,
            transaction_id=result.transaction_id,
            points_awarded=result.points,
            member_id=purchase.member.pk,
        )
        if result.status != OutcomeStatus.POSTED:
            continue
        item.posted = result
        for component in item.computation.components:
            if component.promotion_id is None:
                continue
            awards.append(
                PromotionAward(
                    promotion_id=component.promotion_id,
                    member_id=purchase.member.pk,
                    transaction_id=result.transaction_id,
                    points=component.points,
                )
            )
            if component.promotion_id in budgeted:
                budget_spent[component.promotion_id] += component.points
    PromotionAward.objects.bulk_create(awards)
    # Only budgeted promotions keep a running counter (locked above), as in `_post_purchase`.
    for promotion_id, points in sorted(budget_spent.items()):
        Promotion.objects.filter(pk=promotion_id).update(
            awarded_points=F("awarded_points") + points
        )


def _follow_up(
    partner: Partner, computed: list[_Computed], referral_due: set[int], now: datetime
) -> None:
    """Referral bonuses, charity round-ups and webhook events of the posted purchases."""
    posted = [item for item in computed if item.posted is not None]
    for item in posted:
        if item.referral and item.purchase.member.pk in referral_due:
            _referral_bonus(item.purchase.member.instance(), now)
    if not posted:
        return
    # Charity round-up (issue 6), for the members who chose one (found in one query through
    # the member's reverse relation: partners does not import charity at module level).
    giving = set(
        Member.objects.filter(
            pk__any=list({item.purchase.member.pk for item in posted}),
            giving_preference__round_up_charity__isnull=False,
        ).values_list("pk", flat=True)
    )
    if giving:
        from charity.services import round_up_donate

        for item in posted:
            if item.purchase.member.pk in giving:
                round_up_donate(earn_transaction=item.transaction, now=now)
    # Last, as in `_post_purchase`: one points.earned event per purchase that earned.
    if webhooks.endpoints_of(partner=partner).exists():
        for item in posted:
            txn = item.transaction
            webhooks.event_record(
                partner=partner,
                type=webhooks.EventType.POINTS_EARNED,
                payload=lambda txn=txn: webhooks.transaction_payload(txn),
            )
