"""Giving in the member portal: donate points to a charity (with the value shown before the
member confirms), automatic giving settings, and donation receipts.

Like the rest of the portal, every write goes through the charity services the API uses
(`donation_create`, `giving_preferences_update`); a refusal is shown as a message and
writes nothing. The printable receipt and the annual statement are the charity app's pages
(/charity/receipts/<n>/, /charity/statements/<year>/); this module links to them.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from charity import selectors as charity_selectors
from charity import services as charity_services
from charity.models import Charity
from coalition import selectors as ledger_selectors
from coalition.errors import CoalitionError
from coalition.money import points_value
from coalition.services import programme_get

from .auth import member_required

SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "CAD": "CA$", "AUD": "A$", "JPY": "¥"}


def money_text(amount: Decimal, currency: str) -> str:
    """$1.50 for the currencies people know by their sign, else 1.50 CHF."""
    text = f"{amount:,}"
    symbol = SYMBOLS.get(currency)
    return f"{symbol}{text}" if symbol else f"{text} {currency}"


def _parse_points(value: str) -> int | None:
    value = (value or "").strip().replace(",", "").replace("_", "")
    if not value.isdigit():
        return None
    return int(value)


def _charity(charity_id: str) -> Charity | None:
    try:
        return charity_selectors.charity_get_for_member(charity_id=charity_id)
    except CoalitionError:
        return None


def _idempotency_key(value: str) -> str | None:
    """The form's own key (a UUID made when the confirm page was shown), or None."""
    try:
        return str(uuid.UUID(value))
    except (TypeError, ValueError):
        return None


@require_GET
@member_required
def give(request):
    """Charities to give to, the donation form, and automatic giving settings."""
    member = request.member
    programme = programme_get()
    charities = list(charity_selectors.charities_listed())
    causes = dict(charity_selectors.causes_list(active_only=False).values_list("code", "name"))
    for charity in charities:
        charity.cause_name = causes.get(charity.cause, charity.cause)
    selected = request.GET.get("charity", "")
    context = {
        "section": "give",
        "member": member,
        "balance": ledger_selectors.member_balance(member=member),
        "charities": charities,
        "selected": selected,
        "points": request.GET.get("points", ""),
        "programme": programme,
        "price_text": money_text(programme.donation_price.normalize(), programme.currency),
        "example": money_text(
            points_value(1000, programme.donation_price, programme.currency), programme.currency
        ),
        "giving": charity_selectors.giving_preferences_get(member=member),
    }
    return render(request, "web/portal_give.html", context)


@require_http_methods(["GET", "POST"])
@member_required
def give_confirm(request):
    """GET: "N points = $X to <charity>", to confirm. POST: make the donation."""
    member = request.member
    source = request.POST if request.method == "POST" else request.GET
    charity = _charity(source.get("charity", ""))
    points = _parse_points(source.get("points", ""))
    if charity is None:
        messages.error(request, "Choose a charity to give to.")
        return redirect("/portal/give/")
    if points is None or points <= 0:
        messages.error(request, "Enter the number of points to give, as a whole number.")
        return redirect(f"/portal/give/?charity={charity.pk}")
    if request.method == "POST":
        return _donate(request, member, charity, points)

    programme = programme_get()
    value = points_value(points, programme.donation_price, programme.currency)
    balance = ledger_selectors.member_balance(member=member)
    context = {
        "section": "give",
        "member": member,
        "charity": charity,
        "points": points,
        "value": value,
        "value_text": money_text(value, programme.currency),
        "currency": programme.currency,
        "balance": balance,
        # Shown, not enforced: the service has the last word when the member confirms.
        "short_by": max(points - balance.spendable, 0),
        "below_minimum": points < programme.min_donation_points,
        "min_points": programme.min_donation_points,
        "campaigns": charity_selectors.campaigns_in_force(charity=charity, now=timezone.now()),
        "idempotency_key": uuid.uuid4(),
    }
    return render(request, "web/portal_give_confirm.html", context)


def _donate(request, member, charity, points):
    key = _idempotency_key(request.POST.get("idempotency_key", ""))
    if key is None:
        messages.error(request, "This form has expired: please review the donation again.")
        return redirect(f"/portal/give/?charity={charity.pk}&points={points}")
    try:
        donation = charity_services.donation_create(
            member=member, charity=charity, points=points, idempotency_key=f"portal:{key}"
        )
    except CoalitionError as refusal:
        messages.error(request, refusal.message)
        return redirect(f"/portal/give/?charity={charity.pk}&points={points}")
    matched = (
        f" {donation.campaign.sponsor.name} adds {donation.matched_points} points."
        if donation.matched_points
        else ""
    )
    messages.success(
        request,
        f"Thank you! You gave {donation.points} points "
        f"({money_text(donation.value, donation.currency)}) to {donation.charity.name}. "
        f"Receipt {donation.receipt_number}.{matched}",
    )
    return redirect("/portal/receipts/")


def _percent(value: str) -> int | None | bool:
    """None for "off" (empty), the whole number, or False for anything else."""
    value = (value or "").strip().rstrip("%").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        return False


@require_POST
@member_required
def giving_settings(request):
    """Save automatic giving: round-up (charity + percent) and donate-instead-of-expire."""
    member = request.member
    round_up_id = request.POST.get("round_up_charity", "")
    expiry_id = request.POST.get("expiry_charity", "")
    round_up_charity = _charity(round_up_id) if round_up_id else None
    expiry_charity = _charity(expiry_id) if expiry_id else None
    percent = _percent(request.POST.get("round_up_percent", ""))
    if (round_up_id and round_up_charity is None) or (expiry_id and expiry_charity is None):
        messages.error(request, "That charity is not available.")
    elif percent is False:
        messages.error(request, "The round-up share must be a whole percentage from 1 to 100.")
    else:
        try:
            charity_services.giving_preferences_update(
                member=member,
                round_up_charity=round_up_charity,
                round_up_percent=percent,
                expiry_charity=expiry_charity,
            )
        except CoalitionError as refusal:
            messages.error(request, refusal.message)
        else:
            messages.success(request, "Your automatic giving is saved.")
    return redirect("/portal/give/#automatic")


@require_GET
@member_required
def receipts(request):
    """The member's donations with their receipts, and annual statements by year."""
    member = request.member
    donations = list(charity_selectors.member_donations(member=member)[:200])
    disbursements = charity_selectors.donations_disbursements(donations)
    for donation in donations:
        donation.disbursement = disbursements.get(donation.pk)
        donation.value_text = money_text(
            donation.value.quantize(Decimal("0.01")), donation.currency
        )
    context = {
        "section": "receipts",
        "member": member,
        "donations": donations,
        "years": charity_selectors.member_donation_years(member=member),
    }
    return render(request, "web/portal_receipts.html", context)


@require_GET
@member_required
@cache_control(private=True, no_store=True)
def receipt_download(request, receipt_number: str):
    """The printable receipt as a file to keep (the same page the charity app shows)."""
    try:
        donation = charity_selectors.donation_by_receipt(
            receipt_number=receipt_number, member=request.member
        )
    except CoalitionError:
        raise Http404("No such receipt") from None
    body = render_to_string(
        "charity/receipt.html",
        {
            "donation": donation,
            "member": request.member,
            "disbursement": charity_selectors.donations_disbursements([donation]).get(donation.pk),
        },
        request=request,
    )
    response = HttpResponse(body, content_type="text/html; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="receipt-{donation.receipt_number}.html"'
    )
    return response
