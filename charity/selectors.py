"""Reads for charities: which charities are listed, donations and receipts, impact totals,
and what settlement did with the money. Which rows a caller may see is decided here."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce, TruncMonth, TruncYear

from coalition.models import Member

from . import settlement_bridge
from .errors import InvalidInput, NotFound
from .models import Cause, Charity, Donation, GivingPreference, MatchingCampaign
from .settlement_bridge import Disbursement

_RECEIPT_RE = re.compile(r"^CR-\d{4}-\d{6,}$")

# Donations that count: a refunded donation gave nothing in the end.
COUNTED = Q(refunded_at__isnull=True)


# --------------------------------------------------------------------------- charities


def causes_list(*, active_only: bool = True) -> QuerySet:
    causes = Cause.objects.all()
    return causes.filter(active=True) if active_only else causes


def _donated_subquery(column: str) -> Coalesce:
    totals = (
        Donation.objects.filter(COUNTED, charity=OuterRef("pk"))
        .order_by()
        .values("charity")
        .annotate(total=Sum(column))
        .values("total")
    )
    return Coalesce(Subquery(totals, output_field=IntegerField()), 0)


def charities_with_totals(charities: QuerySet) -> QuerySet:
    """Annotate `total_donated_points` (members' donations, refunds excluded) and
    `total_matched_points` (sponsors' matches on them)."""
    return charities.annotate(
        total_donated_points=_donated_subquery("points"),
        total_matched_points=_donated_subquery("matched_points"),
    )


def charities_listed(*, cause: str | None = None, country: str | None = None) -> QuerySet:
    """The charities members can see and give to: verified ones, by name, with totals.

    `cause` is a cause code (or its name); `country` an ISO code. A filter that matches
    nothing gives an empty list, not an error.
    """
    charities = Charity.objects.filter(status=Charity.Status.VERIFIED)
    if cause:
        text = str(cause).strip()
        slug = re.sub(r"[\s_]+", "-", text.lower())
        codes = Cause.objects.filter(Q(code=slug) | Q(name__iexact=text)).values("code")
        charities = charities.filter(cause__in=codes)
    if country:
        charities = charities.filter(country=str(country).strip().upper())
    return charities_with_totals(charities).order_by("name", "id")


def charity_get(*, charity_id: int | str, listed_only: bool = False) -> Charity:
    """A charity by id, or NotFound; `listed_only` hides unverified ones (as if absent)."""
    try:
        pk = int(charity_id)
    except (TypeError, ValueError):
        raise NotFound("No such charity", field="charityId") from None
    charities = Charity.objects.all()
    if listed_only:
        charities = charities.filter(status=Charity.Status.VERIFIED)
    charity = charities.filter(pk=pk).first()
    if charity is None:
        raise NotFound("No such charity", field="charityId")
    return charity


def charity_get_for_member(*, charity_id: int | str) -> Charity:
    """A charity a member may name: a verified one, or a suspended one they may know from
    before (the donation service then says it is suspended, INVALID_STATE). A charity never
    verified was never shown to members: it is not found, like an unknown id."""
    charity = charity_get(charity_id=charity_id)
    if charity.status == Charity.Status.PENDING:
        raise NotFound("No such charity", field="charityId")
    return charity


def charity_total_donated_points(*, charity: Charity) -> int:
    """Points members gave the charity (refunded donations excluded, matches not added)."""
    total = getattr(charity, "total_donated_points", None)
    if total is not None:
        return total
    return (
        Donation.objects.filter(COUNTED, charity=charity).aggregate(total=Sum("points"))["total"]
        or 0
    )


def charity_total_matched_points(*, charity: Charity) -> int:
    """Points sponsors added to the charity's donations (refunded ones excluded)."""
    total = getattr(charity, "total_matched_points", None)
    if total is not None:
        return total
    donations = Donation.objects.filter(COUNTED, charity=charity)
    return donations.aggregate(total=Sum("matched_points"))["total"] or 0


def charity_payable(charity: Charity) -> bool:
    """May settlement pay this charity now? Only a verified charity with a Stripe account.

    A suspended (or not yet verified) charity's money is held, not lost: its disbursement
    lines wait until an operator verifies it again.
    """
    return charity.status == Charity.Status.VERIFIED and bool(charity.stripe_account_id)


# --------------------------------------------------------------------------- donations


def member_donations(*, member: Member) -> QuerySet:
    """A member's donations, newest first (refunded ones included, marked as such)."""
    return (
        Donation.objects.filter(member=member)
        .select_related("charity")
        .order_by("-created_at", "-id")
    )


def donation_get(*, donation_id: int | str, member: Member | None = None) -> Donation:
    """A donation; a member can only reach their own (others are not found)."""
    try:
        pk = int(donation_id)
    except (TypeError, ValueError):
        raise NotFound("No such donation", field="donationId") from None
    donations = Donation.objects.select_related("charity", "member")
    if member is not None:
        donations = donations.filter(member=member)
    donation = donations.filter(pk=pk).first()
    if donation is None:
        raise NotFound("No such donation", field="donationId")
    return donation


def donation_by_receipt(*, receipt_number: str, member: Member | None) -> Donation:
    """The donation with this receipt number, if it is the member's own (else NotFound:
    another member's receipt is indistinguishable from a receipt that does not exist).
    `member=None` is the operator's view of any receipt."""
    if not isinstance(receipt_number, str) or not _RECEIPT_RE.match(receipt_number):
        raise NotFound("No such receipt", field="receiptNumber")
    donations = Donation.objects.select_related("charity", "member", "campaign__sponsor")
    if member is not None:
        donations = donations.filter(member=member)
    donation = donations.filter(receipt_number=receipt_number).first()
    if donation is None:
        raise NotFound("No such receipt", field="receiptNumber")
    return donation


def donation_disbursement(donation: Donation) -> tuple[int, str | None, datetime | None] | None:
    """(settlement run id, Stripe transfer id, paid at) of the run that carried this
    donation to its charity, or None while no run has claimed it."""
    found = settlement_bridge.transactions_disbursements(transaction_ids=[donation.transaction_id])
    disbursement = found.get(donation.transaction_id)
    if disbursement is None:
        return None
    return (disbursement.run_id, disbursement.transfer_id, disbursement.paid_at)


def donations_disbursements(donations: Iterable[Donation]) -> dict[int, Disbursement]:
    """Disbursements of many donations at once, by donation id (missing: not claimed)."""
    by_transaction = {donation.transaction_id: donation.pk for donation in donations}
    found = settlement_bridge.transactions_disbursements(transaction_ids=list(by_transaction))
    return {by_transaction[txn_id]: value for txn_id, value in found.items()}


def donation_refundable(donation: Donation) -> bool:
    """An operator may refund a donation until a settlement run claims it."""
    if donation.refunded_at is not None:
        return False
    ids = [donation.transaction_id, donation.match_transaction_id]
    return not settlement_bridge.transactions_claimed(transaction_ids=ids)


@dataclass(frozen=True)
class AnnualStatement:
    member: Member
    year: int
    donations: list[Donation]
    disbursements: dict[int, Disbursement]
    total_points: int
    total_values: dict[str, Decimal]  # by currency (one, unless the programme changed it)
    total_matched_points: int
    refunded_count: int = 0
    charities: list[tuple[str, str, int]] = field(default_factory=list)  # name, reg., points


def member_annual_statement(*, member: Member, year: int) -> AnnualStatement:
    """All of a member's donations of a calendar year, with totals (refunds excluded)."""
    if isinstance(year, bool) or not isinstance(year, int) or not 2000 <= year <= 9999:
        raise InvalidInput("Not a valid year", field="year")
    donations = list(
        Donation.objects.filter(member=member, created_at__year=year)
        .select_related("charity")
        .order_by("created_at", "id")
    )
    counted = [donation for donation in donations if donation.refunded_at is None]
    values: dict[str, Decimal] = {}
    per_charity: dict[int, list] = {}
    for donation in counted:
        values[donation.currency] = values.get(donation.currency, Decimal(0)) + donation.value
        row = per_charity.setdefault(
            donation.charity_id,
            [donation.charity.name, donation.charity.registration_number, 0],
        )
        row[2] += donation.points
    disbursements = donations_disbursements(donations)
    for donation in donations:
        donation.disbursement = disbursements.get(donation.pk)
    return AnnualStatement(
        member=member,
        year=year,
        donations=donations,
        disbursements=disbursements,
        total_points=sum(donation.points for donation in counted),
        total_values=values,
        total_matched_points=sum(donation.matched_points for donation in counted),
        refunded_count=len(donations) - len(counted),
        charities=[tuple(row) for row in per_charity.values()],
    )


def member_donation_years(*, member: Member) -> list[int]:
    """The years a member has donations in, newest first (for statement links)."""
    years = (
        Donation.objects.filter(member=member)
        .annotate(year=TruncYear("created_at"))
        .values_list("year", flat=True)
        .distinct()
    )
    return sorted({moment.year for moment in years}, reverse=True)


def giving_preferences_get(*, member: Member) -> GivingPreference:
    """The member's automatic giving (an unsaved, switched-off one if never chosen)."""
    preference = (
        GivingPreference.objects.select_related("round_up_charity", "expiry_charity")
        .filter(member=member)
        .first()
    )
    return preference or GivingPreference(member=member)


# --------------------------------------------------------------------------- impact


@dataclass(frozen=True)
class ImpactRow:
    key: str  # charity id or cause code
    label: str
    donated_points: int
    matched_points: int
    value: Decimal
    donations: int
    donors: int


def _impact_donations(
    *, start: datetime | None, end: datetime | None, verified_only: bool
) -> QuerySet:
    donations = Donation.objects.filter(COUNTED)
    if start is not None:
        donations = donations.filter(created_at__gte=start)
    if end is not None:
        donations = donations.filter(created_at__lt=end)
    if verified_only:
        donations = donations.filter(charity__status=Charity.Status.VERIFIED)
    return donations.order_by()


_TOTALS = {
    "donated_points": Coalesce(Sum("points"), 0),
    "matched_points": Coalesce(Sum("matched_points"), 0),
    "value": Coalesce(Sum("value"), Decimal(0)),
    "donations": Count("id"),
    "donors": Count("member", distinct=True),
}


def charity_impact(
    *, start: datetime | None = None, end: datetime | None = None, verified_only: bool = True
) -> list[ImpactRow]:
    """Totals per charity over [start, end), most points first (refunds excluded).

    Values are summed in the programme currency (donations keep the currency they were
    valued in; a programme does not change its currency).
    """
    rows = (
        _impact_donations(start=start, end=end, verified_only=verified_only)
        .values("charity_id", "charity__name")
        .annotate(**_TOTALS)
        .order_by("-donated_points", "charity__name")
    )
    return [
        ImpactRow(
            key=str(row["charity_id"]),
            label=row["charity__name"],
            donated_points=row["donated_points"],
            matched_points=row["matched_points"],
            value=row["value"],
            donations=row["donations"],
            donors=row["donors"],
        )
        for row in rows
    ]


def cause_impact(
    *, start: datetime | None = None, end: datetime | None = None, verified_only: bool = True
) -> list[ImpactRow]:
    """Totals per cause over [start, end), most points first."""
    names = dict(Cause.objects.values_list("code", "name"))
    rows = (
        _impact_donations(start=start, end=end, verified_only=verified_only)
        .values("charity__cause")
        .annotate(**_TOTALS)
        .order_by("-donated_points", "charity__cause")
    )
    return [
        ImpactRow(
            key=row["charity__cause"],
            label=names.get(row["charity__cause"], row["charity__cause"]),
            donated_points=row["donated_points"],
            matched_points=row["matched_points"],
            value=row["value"],
            donations=row["donations"],
            donors=row["donors"],
        )
        for row in rows
    ]


@dataclass(frozen=True)
class ImpactPeriod:
    period: datetime  # first moment of the month
    donated_points: int
    matched_points: int
    value: Decimal
    donations: int


def impact_over_time(
    *,
    charity: Charity | None = None,
    cause: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    verified_only: bool = False,
) -> list[ImpactPeriod]:
    """Monthly totals, oldest first, for one charity, one cause, or everything."""
    donations = _impact_donations(start=start, end=end, verified_only=verified_only)
    if charity is not None:
        donations = donations.filter(charity=charity)
    if cause:
        donations = donations.filter(charity__cause=cause)
    rows = (
        donations.annotate(period=TruncMonth("created_at"))
        .values("period")
        .annotate(**{k: v for k, v in _TOTALS.items() if k != "donors"})
        .order_by("period")
    )
    return [
        ImpactPeriod(
            period=row["period"],
            donated_points=row["donated_points"],
            matched_points=row["matched_points"],
            value=row["value"],
            donations=row["donations"],
        )
        for row in rows
    ]


def campaigns_in_force(*, charity: Charity, now: datetime) -> list[MatchingCampaign]:
    """Campaigns that would match a donation to this charity now (cap not yet reached)."""
    return list(
        MatchingCampaign.objects.filter(
            Q(charity=charity) | Q(charity__isnull=True, cause=charity.cause),
            active=True,
            starts_at__lte=now,
            ends_at__gt=now,
            sponsor__status="active",
        ).select_related("sponsor")
    )
