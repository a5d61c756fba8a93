"""Printable pages: a member's donation receipts and annual statements, and the public
impact page. Members are not Django users: they come with a portal session, or with a
member token (`Authorization: Bearer cm_…`) from an app. Another member's receipt is not
found, exactly like one that does not exist."""

from datetime import datetime

from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET

from coalition.models import Member
from coalition.services import programme_get

from . import selectors
from .errors import CoalitionError


def _bearer_member(request) -> Member | None | bool:
    """The member of a bearer token; False when a header is sent but does not hold."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    # Member tokens are the API's credentials; it is the one place that signs and checks them.
    from api.core.auth import MEMBER_TOKEN_PREFIX, member_token_verify

    token = token.strip()
    if not token.startswith(MEMBER_TOKEN_PREFIX):
        return False
    member = member_token_verify(token)
    if member is None or member.status != Member.Status.ACTIVE:
        return False
    return member


def _member_or_login(request):
    """(member, None) for the caller, or (None, the response that refuses them)."""
    member = _bearer_member(request)
    if member is False:
        return None, HttpResponse("Invalid or expired member token", status=401)
    if member is None:
        from web.auth import session_member

        member = session_member(request)
    if member is None:
        return None, redirect(f"/portal/login/?next={request.path}")
    return member, None


@require_GET
@cache_control(private=True, no_store=True)
def receipt(request, receipt_number: str):
    """A donation receipt to print: charity, registration number, points, value, date,
    and whether the money has reached the charity yet."""
    member, refused = _member_or_login(request)
    if refused is not None:
        return refused
    try:
        donation = selectors.donation_by_receipt(receipt_number=receipt_number, member=member)
    except CoalitionError:
        raise Http404("No such receipt") from None
    context = {
        "donation": donation,
        "member": member,
        "disbursement": selectors.donations_disbursements([donation]).get(donation.pk),
    }
    return render(request, "charity/receipt.html", context)


@require_GET
@cache_control(private=True, no_store=True)
def statement(request, year: int):
    """Every donation of the member in a calendar year, with totals, to print."""
    member, refused = _member_or_login(request)
    if refused is not None:
        return refused
    try:
        annual = selectors.member_annual_statement(member=member, year=year)
    except CoalitionError:
        raise Http404("No such statement") from None
    return render(
        request,
        "charity/statement.html",
        {"statement": annual, "member": member, "now": timezone.now()},
    )


@require_GET
@cache_control(private=True, no_store=True)
def donations(request):
    """The member's donations with their receipts, statements by year, and their automatic
    giving choices."""
    member, refused = _member_or_login(request)
    if refused is not None:
        return refused
    donation_list = list(selectors.member_donations(member=member)[:200])
    disbursements = selectors.donations_disbursements(donation_list)
    for donation in donation_list:
        donation.disbursement = disbursements.get(donation.pk)
    context = {
        "member": member,
        "donations": donation_list,
        "years": selectors.member_donation_years(member=member),
        "giving": selectors.giving_preferences_get(member=member),
    }
    return render(request, "charity/donations.html", context)


def _year_bounds(value: str | None) -> tuple[int | None, datetime | None, datetime | None]:
    if not value or not value.isdigit() or not 2000 <= int(value) <= 9999:
        return None, None, None
    year = int(value)
    start = datetime(year, 1, 1, tzinfo=timezone.get_current_timezone())
    return year, start, start.replace(year=year + 1)


@require_GET
@cache_control(public=True, max_age=300)
def impact(request):
    """Public: what members gave to each verified charity and each cause (refunds excluded);
    `?year=2026` narrows it to a year."""
    year, start, end = _year_bounds(request.GET.get("year"))
    context = {
        "year": year,
        "currency": programme_get().currency,
        "charities": selectors.charity_impact(start=start, end=end),
        "causes": selectors.cause_impact(start=start, end=end),
        "months": selectors.impact_over_time(start=start, end=end, verified_only=True),
    }
    return render(request, "charity/impact.html", context)
