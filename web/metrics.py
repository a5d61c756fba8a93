"""Programme metrics and the series behind the finance dashboard's charts.

Reads only, each one a handful of set-based aggregates over the ledger (no per-member loops
in Python). Every metric carries its definition, which the dashboard prints next to it, so
finance and partners argue about the business and not about the arithmetic.

Vocabulary, from the member wallet's point of view (the ledger's entries on member wallets):

- *issued*: points credited by earn and bonus transactions, net of their refunds;
- *redeemed*: points debited by burns (one-shot or captured holds), net of reversals;
- *expired*: points taken by expiry; *donated*: points given to charities;
- a *purchase*: an earn transaction with a purchase amount (a partner recorded a sale);
- an *active* member: one with a purchase, a redemption or a donation in the window.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from charity import selectors as charity_selectors
from coalition.models import Account, Entry, LedgerTransaction, Member
from coalition.services import programme_get
from partners.models import Partner
from settlement.models import SettlementLine, SettlementRun

DEFAULT_WINDOW_DAYS = 90
MIN_WINDOW_DAYS = 7
MAX_WINDOW_DAYS = 730
DAYS_PER_MONTH = Decimal("30.4375")  # 365.25 / 12

Kind = LedgerTransaction.Kind
ISSUING = (Kind.EARN, Kind.BONUS)
ACTIVE_KINDS = (Kind.EARN, Kind.BURN, Kind.DONATE)


@dataclass(frozen=True)
class Window:
    """[start, end): the last `days` days up to `end`."""

    start: datetime
    end: datetime
    days: int

    @property
    def previous(self) -> Window:
        return Window(start=self.start - timedelta(days=self.days), end=self.start, days=self.days)

    def dates(self) -> list[date]:
        """Every calendar day (in the current time zone) the window touches, oldest first."""
        first = timezone.localtime(self.start).date()
        last = timezone.localtime(self.end - timedelta(microseconds=1)).date()
        return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def window(*, days: int = DEFAULT_WINDOW_DAYS, now: datetime | None = None) -> Window:
    days = max(MIN_WINDOW_DAYS, min(int(days), MAX_WINDOW_DAYS))
    end = now or timezone.now()
    return Window(start=end - timedelta(days=days), end=end, days=days)


# --------------------------------------------------------------------------- building blocks


def _wallet_entries(start: datetime | None, end: datetime) -> QuerySet:
    """Entries on member wallets in [start, end), each with the kind of the flow it belongs
    to: a reversal counts against the kind it reverses (a refunded earn lowers *issued*)."""
    entries = Entry.objects.filter(
        account__kind=Account.Kind.MEMBER_WALLET, transaction__created_at__lt=end
    )
    if start is not None:
        entries = entries.filter(transaction__created_at__gte=start)
    return entries.annotate(
        flow=Coalesce(F("transaction__reversal_of__kind"), F("transaction__kind"))
    ).order_by()


def _flow_totals(win: Window) -> dict[str, int]:
    """Wallet points per flow kind in the window, signed as the wallet sees them."""
    rows = _wallet_entries(win.start, win.end).values("flow").annotate(points=Sum("points"))
    return {row["flow"]: int(row["points"] or 0) for row in rows}


def _purchases(win: Window) -> QuerySet:
    return LedgerTransaction.objects.filter(
        kind=Kind.EARN,
        purchase_amount__isnull=False,
        member__isnull=False,
        created_at__gte=win.start,
        created_at__lt=win.end,
    ).order_by()


def _active_member_ids(win: Window) -> QuerySet:
    return (
        LedgerTransaction.objects.filter(
            kind__in=ACTIVE_KINDS,
            member__isnull=False,
            created_at__gte=win.start,
            created_at__lt=win.end,
        )
        .order_by()
        .values("member_id")
        .distinct()
    )


def _ratio(numerator: Decimal | int, denominator: Decimal | int) -> Decimal | None:
    if not denominator:
        return None
    return Decimal(numerator) / Decimal(denominator)


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    value: Decimal | None  # None: undefined (nothing to divide by)
    display: str
    definition: str
    detail: str = ""


def _percent(value: Decimal | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def _number(value: Decimal | None, places: int = 1) -> str:
    return "—" if value is None else f"{value:,.{places}f}"


@dataclass(frozen=True)
class ProgrammeMetrics:
    window: Window
    currency: str
    metrics: list[Metric] = field(default_factory=list)

    def get(self, key: str) -> Metric:
        return next(metric for metric in self.metrics if metric.key == key)


def programme_metrics(*, days: int = DEFAULT_WINDOW_DAYS, now: datetime | None = None):
    """The programme's health over the last `days` days (default 90)."""
    win = window(days=days, now=now)
    currency = programme_get().currency
    flows = _flow_totals(win)
    issued = sum(flows.get(kind, 0) for kind in ISSUING)
    redeemed = -flows.get(Kind.BURN, 0)
    months = Decimal(win.days) / DAYS_PER_MONTH

    purchases = _purchases(win)
    spend = purchases.filter(purchase_currency=currency).aggregate(
        points=Coalesce(Sum("member_points"), 0), amount=Sum("purchase_amount")
    )
    members = Member.objects.filter(created_at__lt=win.end).count()

    buyers = (
        purchases.values("member_id")
        .annotate(count=Count("id"))
        .aggregate(
            buyers=Count("member_id"),
            repeat=Count("member_id", filter=Q(count__gte=2)),
        )
    )
    previous_active = _active_member_ids(win.previous)
    previous_count = previous_active.count()
    retained = (
        _active_member_ids(win).filter(member_id__in=previous_active.values("member_id")).count()
    )
    brands = (
        LedgerTransaction.objects.filter(
            kind__in=(Kind.EARN, Kind.BURN),
            member__isnull=False,
            partner__isnull=False,
            created_at__gte=win.start,
            created_at__lt=win.end,
        )
        .order_by()
        .values("member_id")
        .annotate(brands=Count("partner_id", distinct=True))
        .aggregate(
            shoppers=Count("member_id"),
            multi=Count("member_id", filter=Q(brands__gte=2)),
        )
    )

    earn_per_unit = _ratio(spend["points"], spend["amount"] or 0)
    per_member_month = _ratio(issued, Decimal(members) * months) if members else None
    redemption = _ratio(redeemed, issued) if issued > 0 else None
    repurchase = _ratio(buyers["repeat"], buyers["buyers"])
    retention = _ratio(retained, previous_count)
    cross_brand = _ratio(brands["multi"], brands["shoppers"])
    d = win.days
    metrics = [
        Metric(
            "earn_rate",
            f"Earn rate (points per {currency} spent)",
            earn_per_unit,
            _number(earn_per_unit, 2),
            f"Points credited by purchases ÷ the {currency} amount of those purchases, over "
            f"purchases recorded in the last {d} days (bonuses not counted; refunds ignored).",
            f"{spend['points']:,} points on {spend['amount'] or 0:,.2f} {currency}",
        ),
        Metric(
            "issued_per_member_month",
            "Points issued per member per month",
            per_member_month,
            _number(per_member_month, 0),
            f"Points issued (earns and bonuses, net of refunds) in the last {d} days ÷ members "
            f"enrolled by the end of the window ÷ {months:.2f} months ({d} days ÷ 30.44).",
            f"{issued:,} points, {members:,} members",
        ),
        Metric(
            "redemption_rate",
            "Redemption rate",
            redemption,
            _percent(redemption),
            f"Points redeemed at partners (net of reversals) ÷ points issued, both in the last "
            f"{d} days. Donations and expiry are not redemptions.",
            f"{redeemed:,} of {issued:,} points",
        ),
        Metric(
            "repurchase_rate",
            "Repurchase rate",
            repurchase,
            _percent(repurchase),
            f"Members with two or more purchases ÷ members with at least one purchase, in the "
            f"last {d} days (any brand).",
            f"{buyers['repeat']:,} of {buyers['buyers']:,} buyers",
        ),
        Metric(
            "retention",
            f"{d}-day retention",
            retention,
            _percent(retention),
            f"Of the members active in the {d} days before the window (a purchase, a "
            f"redemption or a donation), the share active again in the last {d} days.",
            f"{retained:,} of {previous_count:,} members",
        ),
        Metric(
            "cross_brand_share",
            "Active at two or more brands",
            cross_brand,
            _percent(cross_brand),
            f"Members who earned or redeemed at two or more partners ÷ members who earned or "
            f"redeemed at any partner, in the last {d} days — the coalition effect.",
            f"{brands['multi']:,} of {brands['shoppers']:,} members",
        ),
    ]
    return ProgrammeMetrics(window=win, currency=currency, metrics=metrics)


# --------------------------------------------------------------------------- chart series


@dataclass(frozen=True)
class DailyFlows:
    """Points per day, per partner (label) and in total, as the wallets saw them."""

    days: list[date]
    issued_by_partner: dict[str, list[int]]
    redeemed_by_partner: dict[str, list[int]]
    issued: list[int]
    redeemed: list[int]
    expired: list[int]
    donated: list[int]


OPERATOR_LABEL = "Operator bonuses"


def daily_flows(*, win: Window) -> DailyFlows:
    """Issued, redeemed, expired and donated points per day in the window; issued and
    redeemed also per partner (operator-funded bonuses have a series of their own)."""
    days = win.dates()
    index = {day: n for n, day in enumerate(days)}
    rows = (
        _wallet_entries(win.start, win.end)
        .annotate(day=TruncDate("transaction__created_at"))
        .values("day", "flow", "transaction__partner_id")
        .annotate(points=Sum("points"))
    )
    names = dict(Partner.objects.values_list("id", "name"))
    issued_by: dict[str, list[int]] = defaultdict(lambda: [0] * len(days))
    redeemed_by: dict[str, list[int]] = defaultdict(lambda: [0] * len(days))
    totals = {kind: [0] * len(days) for kind in (Kind.EARN, Kind.BURN, Kind.EXPIRE, Kind.DONATE)}
    for row in rows:
        position = index.get(row["day"])
        if position is None:
            continue
        points = int(row["points"] or 0)
        partner_id = row["transaction__partner_id"]
        label = names.get(partner_id, f"Partner {partner_id}") if partner_id else OPERATOR_LABEL
        flow = row["flow"]
        if flow in ISSUING:
            issued_by[label][position] += points
            totals[Kind.EARN][position] += points
        elif flow == Kind.BURN:
            redeemed_by[label][position] -= points
            totals[Kind.BURN][position] -= points
        elif flow in (Kind.EXPIRE, Kind.DONATE):
            totals[flow][position] -= points
    return DailyFlows(
        days=days,
        issued_by_partner=dict(sorted(issued_by.items(), key=lambda kv: kv[0] == OPERATOR_LABEL)),
        redeemed_by_partner=dict(sorted(redeemed_by.items())),
        issued=totals[Kind.EARN],
        redeemed=totals[Kind.BURN],
        expired=totals[Kind.EXPIRE],
        donated=totals[Kind.DONATE],
    )


@dataclass(frozen=True)
class OutstandingSeries:
    days: list[date]
    points: list[int]  # outstanding at the end of each day


def outstanding_daily(*, win: Window) -> OutstandingSeries:
    """Points members held at the end of each day: the balance before the window plus the
    running sum of every wallet entry, day by day (the ledger itself, not cached balances)."""
    days = win.dates()
    opening = Entry.objects.filter(
        account__kind=Account.Kind.MEMBER_WALLET, transaction__created_at__lt=win.start
    ).aggregate(points=Coalesce(Sum("points"), 0))["points"]
    moves = dict(
        Entry.objects.filter(
            account__kind=Account.Kind.MEMBER_WALLET,
            transaction__created_at__gte=win.start,
            transaction__created_at__lt=win.end,
        )
        .annotate(day=TruncDate("transaction__created_at"))
        .order_by()
        .values("day")
        .annotate(points=Sum("points"))
        .values_list("day", "points")
    )
    running = int(opening)
    points = []
    for day in days:
        running += int(moves.get(day) or 0)
        points.append(running)
    return OutstandingSeries(days=days, points=points)


@dataclass(frozen=True)
class NetPositions:
    """Net amount per partner per run (positive: paid to the partner; negative: collected)."""

    runs: list[SettlementRun]
    by_partner: dict[str, list[Decimal]]
    currency: str


def net_positions(*, last_runs: int = 12) -> NetPositions:
    runs = list(
        SettlementRun.objects.exclude(status=SettlementRun.Status.DISCARDED).order_by("-id")[
            :last_runs
        ]
    )[::-1]
    position = {run.pk: n for n, run in enumerate(runs)}
    rows = (
        SettlementLine.objects.filter(run_id__in=position, partner__isnull=False)
        .order_by()
        .values_list("run_id", "partner__name", "net_amount")
    )
    by_partner: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * len(runs))
    for run_id, name, amount in rows:
        by_partner[name][position[run_id]] += amount
    return NetPositions(
        runs=runs, by_partner=dict(sorted(by_partner.items())), currency=programme_get().currency
    )


@dataclass(frozen=True)
class CharityDonations:
    charities: list[str]
    donated_points: list[int]
    matched_points: list[int]
    values: list[Decimal]
    currency: str


def donations_by_charity(*, win: Window) -> CharityDonations:
    """Members' donations and sponsors' matches per charity in the window (refunds out)."""
    rows = charity_selectors.charity_impact(start=win.start, end=win.end, verified_only=False)
    return CharityDonations(
        charities=[row.label for row in rows],
        donated_points=[row.donated_points for row in rows],
        matched_points=[row.matched_points for row in rows],
        values=[row.value for row in rows],
        currency=programme_get().currency,
    )
