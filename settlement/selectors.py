"""Reads of settlement: runs, lines, statements a caller may see, reconciliation, liability."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from coalition.models import Account, Entry, LedgerTransaction
from coalition.money import round_money
from coalition.services import programme_get
from partners.models import CommercialTerms, Partner

from .errors import NotFound, PermissionDenied
from .models import Reconciliation, SettlementClaim, SettlementLine, SettlementRun

REDEMPTION_MIX_DAYS = 90
BREAKAGE_WINDOW_DAYS = 365


def run_get(*, run_id: int) -> SettlementRun:
    run = SettlementRun.objects.filter(pk=run_id).first()
    if run is None:
        raise NotFound("No such settlement run", field="runId")
    return run


def runs_list() -> QuerySet:
    """Every run, newest first (staff only: the caller's permission is checked by the API)."""
    return SettlementRun.objects.select_related("created_by", "approved_by").order_by("-id")


def run_lines(*, run: SettlementRun) -> QuerySet:
    return run.lines.select_related("partner", "charity").order_by("id")


def line_get(*, line_id: int) -> SettlementLine:
    line = SettlementLine.objects.select_related("run", "partner", "charity").filter(pk=line_id)
    found = line.first()
    if found is None:
        raise NotFound("No such settlement line", field="lineId")
    return found


def statement_line(
    *,
    run_id: int,
    partner_id: int | None = None,
    charity_id: int | None = None,
    viewer_partner_id: int | None = None,
    viewer_is_staff: bool = False,
) -> SettlementLine:
    """The line a statement is made of. A partner sees only its own statements (another
    partner's is refused); staff see every one."""
    if not viewer_is_staff and (viewer_partner_id is None or viewer_partner_id != partner_id):
        raise PermissionDenied("A partner can only read its own statements")
    lines = SettlementLine.objects.select_related("run", "partner", "charity").filter(run_id=run_id)
    line = (
        lines.filter(partner_id=partner_id).first()
        if partner_id is not None
        else lines.filter(charity_id=charity_id).first()
    )
    if line is None or line.run.status == SettlementRun.Status.DISCARDED:
        raise NotFound("No statement for this run and counterparty")
    return line


def reconciliation_latest(*, run: SettlementRun) -> Reconciliation | None:
    return run.reconciliations.order_by("-created_at", "-id").first()


def run_totals_tie(*, run: SettlementRun) -> bool:
    """The run's identity: collected - paid out == operator revenue + change of the float."""
    return run.total_collected - run.total_paid_out == run.operator_revenue + run.float_change


# --------------------------------------------------------------------------- for charity

MAX_CARRY_HOPS = 24


@dataclass(frozen=True)
class Disbursement:
    """The run and Stripe transfer that pay (or paid) a charity its money."""

    run_id: int
    transfer_id: str | None
    paid_at: datetime | None


def transactions_claimed(*, transaction_ids) -> bool:
    """Has a (not discarded) run claimed any of these ledger transactions?"""
    ids = [pk for pk in transaction_ids if pk is not None]
    return bool(ids) and SettlementClaim.objects.filter(transaction_id__in=ids).exists()


def transactions_disbursements(*, transaction_ids) -> dict[int, Disbursement]:
    """For each claimed transaction: the run whose charity line pays it (following lines
    carried forward to the run that took them in) and that line's transfer, once paid."""
    ids = sorted({pk for pk in transaction_ids if pk is not None})
    claims = SettlementClaim.objects.filter(transaction_id__in=ids).values_list(
        "transaction_id", "run_id", "transaction__charity_id"
    )
    found: dict[int, Disbursement] = {}
    cache: dict[tuple[int, int | None], Disbursement] = {}
    for transaction_id, run_id, charity_id in claims:
        key = (run_id, charity_id)
        if key not in cache:
            cache[key] = _charity_disbursement(run_id, charity_id)
        found[transaction_id] = cache[key]
    return found


def _charity_disbursement(run_id: int, charity_id: int | None) -> Disbursement:
    for _hop in range(MAX_CARRY_HOPS):
        line = SettlementLine.objects.filter(run_id=run_id, charity_id=charity_id).first()
        if line is None or not (line.carried_to_run_id and not line.stripe_object_id):
            break
        run_id = line.carried_to_run_id  # carried forward: paid (if ever) by that run
    if line is None:
        return Disbursement(run_id=run_id, transfer_id=None, paid_at=None)
    return Disbursement(
        run_id=line.run_id,
        transfer_id=line.stripe_object_id or None,
        paid_at=line.paid_at if line.status == SettlementLine.Status.PAID else None,
    )


# --------------------------------------------------------------------------- liability


@dataclass(frozen=True)
class RedemptionWeight:
    label: str
    points: int
    price: Decimal


@dataclass(frozen=True)
class Liability:
    """What the points members hold would cost the operator if redeemed now."""

    as_of: datetime
    currency: str
    outstanding_points: int  # every member wallet's balance (held points included)
    held_points: int  # of which reserved by active redemption holds
    cost_per_point: Decimal  # current prices weighted by the last 90 days' redemptions
    estimated_cost: Decimal
    weights: tuple[RedemptionWeight, ...]
    breakage_points_12m: int  # points expired in the last 12 months
    breakage_revenue_12m: Decimal  # breakage booked by runs ending in the last 12 months


def _current_redemption_prices(now: datetime) -> dict[int, Decimal]:
    prices: dict[int, Decimal] = {}
    for terms in CommercialTerms.objects.filter(valid_from__lte=now).order_by(
        "partner_id", "-valid_from"
    ):
        prices.setdefault(terms.partner_id, terms.redemption_price)
    return prices


def liability(*, now: datetime | None = None) -> Liability:
    """Outstanding points, their estimated cost and the breakage realised lately.

    The cost per point is the current redemption price of each partner (and the programme's
    donation price for donations), weighted by where points were redeemed in the last 90
    days; with no redemptions in that window, the plain average of the active partners'
    current prices.
    """
    now = now or timezone.now()
    programme = programme_get()
    wallets = Account.objects.filter(kind=Account.Kind.MEMBER_WALLET).aggregate(
        balance=Sum("balance"), held=Sum("held")
    )
    outstanding = int(wallets["balance"] or 0)
    held = int(wallets["held"] or 0)

    since = now - timedelta(days=REDEMPTION_MIX_DAYS)
    prices = _current_redemption_prices(now)
    redeemed = (
        Entry.objects.filter(
            account__kind=Account.Kind.PARTNER_REDEEMED,
            transaction__created_at__gte=since,
            transaction__created_at__lt=now,
        )
        .values("account__partner_id")
        .annotate(points=Sum("points"))
    )
    partners = Partner.objects.in_bulk([row["account__partner_id"] for row in redeemed])
    weights = [
        RedemptionWeight(
            label=f"partner {partners[row['account__partner_id']].code}",
            points=int(row["points"]),
            price=prices.get(row["account__partner_id"], Decimal(0)),
        )
        for row in redeemed
        if row["points"] and row["points"] > 0
    ]
    donated = (
        Entry.objects.filter(
            account__kind=Account.Kind.CHARITY_RECEIVED,
            transaction__created_at__gte=since,
            transaction__created_at__lt=now,
        )
        .filter(
            Q(transaction__kind=LedgerTransaction.Kind.DONATE)
            | Q(transaction__reversal_of__kind=LedgerTransaction.Kind.DONATE)
        )
        .aggregate(points=Sum("points"))["points"]
        or 0
    )
    if donated > 0:
        weights.append(
            RedemptionWeight(label="donations", points=int(donated), price=programme.donation_price)
        )
    weight_total = sum(w.points for w in weights)
    if weight_total:
        cost_per_point = sum((w.price * w.points for w in weights), Decimal(0)) / weight_total
    else:
        active = [
            price
            for partner_id, price in prices.items()
            if partner_id
            in set(
                Partner.objects.filter(status=Partner.Status.ACTIVE).values_list("id", flat=True)
            )
        ]
        cost_per_point = sum(active, Decimal(0)) / len(active) if active else Decimal(0)

    year_ago = now - timedelta(days=BREAKAGE_WINDOW_DAYS)
    breakage_points = (
        Entry.objects.filter(
            account__kind=Account.Kind.BREAKAGE,
            transaction__created_at__gte=year_ago,
            transaction__created_at__lt=now,
        ).aggregate(points=Sum("points"))["points"]
        or 0
    )
    breakage_revenue = SettlementRun.objects.exclude(status=SettlementRun.Status.DISCARDED).filter(
        period_end__gt=year_ago, period_end__lte=now
    ).aggregate(total=Sum("breakage_revenue"))["total"] or Decimal(0)
    currency = programme.currency
    return Liability(
        as_of=now,
        currency=currency,
        outstanding_points=outstanding,
        held_points=held,
        cost_per_point=cost_per_point.quantize(Decimal("0.000001")),
        estimated_cost=round_money(Decimal(outstanding) * cost_per_point, currency),
        weights=tuple(weights),
        breakage_points_12m=int(breakage_points),
        breakage_revenue_12m=round_money(Decimal(breakage_revenue), currency),
    )
