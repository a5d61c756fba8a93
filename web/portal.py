"""The member portal: balance, tier, history, expiring points, rewards. Every action goes
through the same services as the API."""

import uuid
from datetime import datetime

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from api.core.auth import client_address
from api.core.limits import rate_limit_hit
from coalition import selectors as ledger_selectors
from coalition import services as ledger
from coalition.errors import CoalitionError
from coalition.models import Tier
from partners import selectors as partner_selectors
from partners import services as partner_services

from .auth import member_login, member_logout, member_required


@require_http_methods(["GET", "POST"])
def login_view(request):
    error = None
    next_url = request.POST.get("next") or request.GET.get("next") or "/portal/"
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = "/portal/"
    if request.method == "POST":
        email = request.POST.get("email", "")
        wait = _login_limit_hit(request, email)
        if wait is not None:
            error = f"Too many login attempts. Please try again in {wait} seconds."
            context = {"error": error, "next": next_url}
            return render(request, "web/login.html", context, status=429)
        member = ledger.member_authenticate(email=email, password=request.POST.get("password", ""))
        if member is None:
            error = "That email and password don't match an active member."
        else:
            member_login(request, member)
            return redirect(next_url)
    return render(request, "web/login.html", {"error": error, "next": next_url})


def _login_limit_hit(request, email: str) -> int | None:
    """Count a login attempt against the API's `memberLogin` limits — the same counters,
    per client address and per email, so guesses spread over the portal and the API add up.
    None if allowed, else the seconds to wait."""
    wait = rate_limit_hit(f"ip:{client_address(request)}", "memberLogin")
    if wait is not None:
        return wait
    return rate_limit_hit(f"email:{email.strip().lower()[:254]}", "memberLogin:email")


@require_POST
def logout_view(request):
    member_logout(request)
    return redirect("/portal/login/")


def _tier_progress(member, now=None):
    tiers = list(Tier.objects.order_by("qualifying_points"))
    current = ledger.member_tier(member=member)
    points = ledger.qualifying_points(member=member)
    upcoming = [t for t in tiers if current and t.qualifying_points > current.qualifying_points]
    following = upcoming[0] if upcoming else None
    progress = None
    if following:
        base = current.qualifying_points if current else 0
        span = max(following.qualifying_points - base, 1)
        progress = max(0, min(100, round(100 * (points - base) / span)))
    return {"tier": current, "qualifying": points, "next": following, "progress": progress}


@member_required
def home(request):
    member = request.member
    context = {
        "section": "home",
        "member": member,
        "balance": ledger_selectors.member_balance(member=member),
        "tier": _tier_progress(member),
        "expiring": ledger_selectors.member_expiring_points(member=member, within_days=60),
        "recent": ledger_selectors.member_history(member=member).select_related(
            "partner", "charity"
        )[:5],
    }
    return render(request, "web/home.html", context)


@member_required
def history(request):
    transactions = ledger_selectors.member_history(member=request.member).select_related(
        "partner", "charity", "reversal_of"
    )
    page = Paginator(transactions, 25).get_page(request.GET.get("page"))
    return render(
        request, "web/history.html", {"section": "history", "member": request.member, "page": page}
    )


@member_required
@require_http_methods(["GET", "POST"])
def rewards(request):
    member = request.member
    if request.method == "POST":
        try:
            redemption = partner_services.reward_redeem(
                member=member,
                reward_id=int(request.POST.get("reward_id", "0")),
                idempotency_key=f"portal:{request.POST.get('idempotency_key', '')}",
            )
        except (CoalitionError, ValueError) as error:
            messages.error(request, getattr(error, "message", "That reward can't be redeemed."))
        else:
            messages.success(
                request,
                f"Redeemed {redemption.reward.name} for {redemption.reward.points_cost} points.",
            )
        return redirect("/portal/rewards/")
    context = {
        "section": "rewards",
        "member": member,
        "balance": ledger_selectors.member_balance(member=member),
        "rewards": partner_selectors.rewards_available(),
        "idempotency_key": uuid.uuid4(),
        "now": datetime.now(),
    }
    return render(request, "web/rewards.html", context)
