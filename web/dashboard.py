"""The finance dashboard (/finance/): settlement runs and their lines, statements, the run
lifecycle (create, approve, execute, retry, carry forward, discard, reconcile), the points
liability, programme metrics and charts.

Finance staff only: a Django session (the admin's log-in page) of an active staff user with
the api.view_finance permission (as the API's finance queries). Who may do what to a run
is the settlement services' rule (api.manage_settlement, api.approve_settlement and the
segregation of duties): the views call them and show their refusal as a message; nothing is
written on a refusal.
"""

from __future__ import annotations

from datetime import datetime
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseForbidden
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from coalition.errors import CoalitionError
from settlement import selectors as settlement_selectors
from settlement import services as settlement_services
from settlement import stripe_gateway as gateway
from settlement.models import SettlementLine, SettlementRun

from . import charts, metrics

ADMIN_LOGIN = "/admin/login/"
REFRESH_SECONDS = 3


VIEW_FINANCE = "api.view_finance"


def staff_required(view):
    """A logged-in, active staff user with api.view_finance (else the admin log-in page, or
    403)."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_staff:
            return HttpResponseForbidden("The finance dashboard is for operator staff only.")
        if not request.user.has_perm(VIEW_FINANCE):
            return HttpResponseForbidden(
                f"The finance dashboard needs the {VIEW_FINANCE} permission."
            )
        return view(request, *args, **kwargs)

    return login_required(wrapper, login_url=ADMIN_LOGIN)


def _window_days(value: str | None) -> int:
    try:
        days = int(value) if value else metrics.DEFAULT_WINDOW_DAYS
    except ValueError:
        days = metrics.DEFAULT_WINDOW_DAYS
    return max(metrics.MIN_WINDOW_DAYS, min(days, metrics.MAX_WINDOW_DAYS))


def _day_label(day) -> str:
    return f"{day:%b} {day.day}"


# --------------------------------------------------------------------------- overview

TOP_PARTNERS = 8


def _top_series(by_name: dict[str, list], *, top: int = TOP_PARTNERS) -> list[charts.Series]:
    """The `top` largest series by total, the rest summed as "Other partners" (legible
    legends and light pages however many brands the coalition has)."""
    ranked = sorted(by_name.items(), key=lambda item: -sum(abs(v) for v in item[1]))
    series = [charts.Series(name, values) for name, values in ranked[:top]]
    rest = ranked[top:]
    if rest:
        summed = [sum(column) for column in zip(*(values for _, values in rest), strict=True)]
        series.append(charts.Series(f"Other partners ({len(rest)})", summed, color="#adb5bd"))
    return series


def overview_charts(*, win: metrics.Window) -> dict[str, str]:
    """The dashboard's charts as inline SVG, by name."""
    flows = metrics.daily_flows(win=win)
    day_labels = [_day_label(day) for day in flows.days]
    outstanding = metrics.outstanding_daily(win=win)
    positions = metrics.net_positions()
    donations = metrics.donations_by_charity(win=win)
    return {
        "flows": charts.line_chart(
            title="Points issued, redeemed and expired per day",
            labels=day_labels,
            series=[
                charts.Series("Issued", flows.issued),
                charts.Series("Redeemed", flows.redeemed),
                charts.Series("Expired", flows.expired),
                charts.Series("Donated", flows.donated),
            ],
            y_label="points",
        ),
        "issued_by_partner": charts.bar_chart(
            title="Points issued per day, by partner",
            labels=day_labels,
            series=_top_series(flows.issued_by_partner),
            stacked=True,
            y_label="points",
        ),
        "redeemed_by_partner": charts.bar_chart(
            title="Points redeemed per day, by partner",
            labels=day_labels,
            series=_top_series(flows.redeemed_by_partner),
            stacked=True,
            y_label="points",
        ),
        "outstanding": charts.line_chart(
            title="Outstanding points (members' liability) at the end of each day",
            labels=[_day_label(day) for day in outstanding.days],
            series=[charts.Series("Outstanding points", outstanding.points)],
            y_label="points",
        ),
        "net_positions": charts.bar_chart(
            title=f"Net position per partner per run ({positions.currency}; + paid, − collected)",
            labels=[f"#{run.pk} {run.period_end:%b %d}" for run in positions.runs],
            series=_top_series(positions.by_partner),
            y_label=positions.currency,
            empty_message="No settlement runs yet",
        ),
        "donations": charts.bar_chart(
            title="Donations per charity (points)",
            labels=donations.charities,
            series=[
                charts.Series("Given by members", donations.donated_points),
                charts.Series("Matched by sponsors", donations.matched_points),
            ],
            stacked=True,
            y_label="points",
            empty_message="No donations in this period",
        ),
    }


@require_GET
@staff_required
def overview(request):
    """Liability, programme metrics with their definitions, and the charts."""
    days = _window_days(request.GET.get("days"))
    programme_metrics = metrics.programme_metrics(days=days)
    win = programme_metrics.window
    liability = settlement_selectors.liability(now=win.end)
    donations = metrics.donations_by_charity(win=win)
    context = {
        "section": "overview",
        "days": days,
        "window": win,
        "metrics": programme_metrics.metrics,
        "currency": programme_metrics.currency,
        "liability": liability,
        "charts": overview_charts(win=win),
        "donation_rows": list(
            zip(donations.charities, donations.donated_points, donations.values, strict=True)
        ),
        "recent_runs": settlement_selectors.runs_list()[:5],
        "window_choices": (30, 90, 180, 365),
    }
    return render(request, "web/dashboard.html", context)


# --------------------------------------------------------------------------- runs


def _default_period_end() -> str:
    """Today at 00:00 in the current time zone, as a datetime-local value."""
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    return today.strftime("%Y-%m-%dT%H:%M")


@require_GET
@staff_required
def runs(request):
    """Every run, newest first, and the form that opens a new one."""
    page = Paginator(settlement_selectors.runs_list(), 25).get_page(request.GET.get("page"))
    open_run = SettlementRun.objects.filter(status__in=SettlementRun.OPEN_STATUSES).first()
    context = {
        "section": "runs",
        "page": page,
        "open_run": open_run,
        "period_end": request.GET.get("period_end") or _default_period_end(),
    }
    return render(request, "web/finance_runs.html", context)


def _parse_period_end(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, timezone.get_current_timezone())
    return moment


@require_POST
@staff_required
def run_create(request):
    value = request.POST.get("period_end", "")
    period_end = _parse_period_end(value)
    if period_end is None:
        messages.error(request, "Enter the period end as a date and time (YYYY-MM-DD HH:MM).")
        return redirect("/finance/runs/")
    try:
        run = settlement_services.run_create(period_end=period_end, created_by=request.user)
    except CoalitionError as refusal:
        messages.error(request, refusal.message)
        return redirect("/finance/runs/")
    messages.success(
        request,
        f"Draft run #{run.pk} created: {run.lines.count()} lines, "
        f"{run.claimed_transactions} transactions up to {period_end:%Y-%m-%d %H:%M}. "
        "Another staff member must approve it.",
    )
    return redirect(f"/finance/runs/{run.pk}/")


def _run_or_404(run_id: int) -> SettlementRun:
    run = SettlementRun.objects.select_related("created_by", "approved_by").filter(pk=run_id)
    found = run.first()
    if found is None:
        raise Http404("No such settlement run")
    return found


def _line_statement_url(line: SettlementLine) -> str:
    kind, counterparty = (
        ("partner", line.partner_id) if line.partner_id else ("charity", line.charity_id)
    )
    return f"/settlement/runs/{line.run_id}/statements/{kind}/{counterparty}.csv"


@require_GET
@staff_required
def run_detail(request, run_id: int):
    """A run: totals, lines with their statements and statuses, what can be done next, the
    latest reconciliation and the transition log. Refreshes itself while money moves."""
    run = _run_or_404(run_id)
    lines = list(settlement_selectors.run_lines(run=run))
    for line in lines:
        line.statement_url = _line_statement_url(line)
    # Lines move while the run executes (the worker, then Stripe's webhooks).
    in_flight = run.status == SettlementRun.Status.EXECUTING
    reconciliation = settlement_selectors.reconciliation_latest(run=run)
    counts = {label: 0 for label in SettlementLine.Status.labels}
    for line in lines:
        counts[line.get_status_display()] += 1
    context = {
        "section": "runs",
        "run": run,
        "lines": lines,
        "line_counts": {k: v for k, v in counts.items() if v},
        "reconciliation": reconciliation,
        "transitions": run.transitions.select_related("line", "actor").order_by(
            "-created_at", "-id"
        )[:50],
        "refresh_seconds": REFRESH_SECONDS if in_flight else None,
        "ties": settlement_selectors.run_totals_tie(run=run),
        "can_approve": run.status == SettlementRun.Status.DRAFT,
        "can_discard": run.status == SettlementRun.Status.DRAFT,
        "can_execute": run.status == SettlementRun.Status.APPROVED,
        "can_reconcile": run.status
        in (
            SettlementRun.Status.EXECUTING,
            SettlementRun.Status.COMPLETED,
            SettlementRun.Status.PARTIALLY_FAILED,
        ),
        "same_user_created": run.created_by_id == request.user.pk,
        # The statement endpoints are settlement's own, with its rule: api.view_finance.
        "can_download": request.user.has_perm("api.view_finance"),
    }
    return render(request, "web/finance_run.html", context)


def _act(request, action, target, success: str, *, back_to: str, **names):
    """Let a settlement service act on a run or line, say how it went, and go back to the
    run's page. A refusal or an unreachable Stripe is a message, not an error page."""
    try:
        done = action(target)
    except CoalitionError as refusal:
        messages.error(request, refusal.message)
    except gateway.GatewayError as failure:
        # Stripe could not be reached for now: the lines stay pending and execution resumes.
        messages.warning(request, f"Stripe did not answer: {failure.message}. It will resume.")
    else:
        if isinstance(done, SettlementLine) and done.status == SettlementLine.Status.PAID:
            # Retry and carry forward look at Stripe first: an earlier attempt had paid.
            success = "Line #{line.pk} was paid at Stripe by an earlier attempt: marked paid."
        messages.success(request, success.format(**names))
    return redirect(back_to)


def _run_action(request, run_id: int, action, success: str):
    run = _run_or_404(run_id)
    return _act(request, action, run, success, back_to=f"/finance/runs/{run.pk}/", run=run)


@require_POST
@staff_required
def run_approve(request, run_id: int):
    return _run_action(
        request,
        run_id,
        lambda run: settlement_services.run_approve(run=run, approved_by=request.user),
        "Run #{run.pk} approved. It can be executed now.",
    )


@require_POST
@staff_required
def run_execute(request, run_id: int):
    return _run_action(
        request,
        run_id,
        lambda run: settlement_services.run_execute(run=run, started_by=request.user),
        "Run #{run.pk} is executing: pay-outs and collections go to Stripe line by line.",
    )


@require_POST
@staff_required
def run_discard(request, run_id: int):
    reason = request.POST.get("reason", "").strip()[:500]
    return _run_action(
        request,
        run_id,
        lambda run: settlement_services.run_discard(
            run=run, discarded_by=request.user, reason=reason
        ),
        "Run #{run.pk} discarded: its transactions go back to the next run.",
    )


@require_POST
@staff_required
def run_reconcile(request, run_id: int):
    result = {}

    def reconcile(run):
        settlement_services.require_staff(request.user, action="reconcile settlement runs")
        result["reconciliation"] = settlement_services.run_reconcile(run=run)

    response = _run_action(request, run_id, reconcile, "Reconciled run #{run.pk} with Stripe.")
    reconciliation = result.get("reconciliation")
    if reconciliation is not None and not reconciliation.clean:
        messages.warning(
            request, f"{len(reconciliation.differences)} difference(s) with Stripe: see below."
        )
    return response


def _line_action(request, line_id: int, action, success: str):
    line = SettlementLine.objects.select_related("run").filter(pk=line_id).first()
    if line is None:
        raise Http404("No such settlement line")
    return _act(request, action, line, success, back_to=f"/finance/runs/{line.run_id}/", line=line)


@require_POST
@staff_required
def line_retry(request, line_id: int):
    return _line_action(
        request,
        line_id,
        lambda line: settlement_services.line_retry(line=line, user=request.user),
        "Line #{line.pk} queued again with a new attempt.",
    )


@require_POST
@staff_required
def line_carry_forward(request, line_id: int):
    reason = request.POST.get("reason", "").strip()[:200]
    return _line_action(
        request,
        line_id,
        lambda line: settlement_services.line_carry_forward(
            line=line, user=request.user, reason=reason
        ),
        "Line #{line.pk} carried forward to the next run.",
    )
