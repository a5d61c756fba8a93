"""The finance dashboard: access, the run lifecycle through the services' rules, statements,
reconciliation, the metrics and their definitions, and the server-drawn SVG charts."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from coalition import services as ledger
from settlement.models import SettlementLine, SettlementRun, SettlementTransition
from tests import factories
from tests.web import finance_data
from web import charts, metrics

# --------------------------------------------------------------------------- charts


def test_a_line_chart_draws_one_path_per_series_with_axes_and_a_legend():
    svg = charts.line_chart(
        title="Points per day",
        labels=["Jan 1", "Jan 2", "Jan 3"],
        series=[charts.Series("Issued", [10, 250, 40]), charts.Series("Redeemed", [0, 5, 90])],
        y_label="points",
    )
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count('<path class="chart-line"') == 2
    assert "Jan 2" in svg and "Issued" in svg and "Redeemed" in svg and "points" in svg
    # the y axis is labelled with round ticks that cover the largest value
    ticks = [int(t) for t in re.findall(r'text-anchor="end" fill="#5b6477">(\d+)<', svg)]
    assert ticks[0] == 0 and ticks[-1] >= 250


def test_stacked_bars_rise_above_and_hang_below_the_zero_line():
    svg = charts.bar_chart(
        title="Net",
        labels=["#1", "#2"],
        series=[charts.Series("A", [Decimal("12.5"), Decimal("-30")]), charts.Series("B", [5, 0])],
        stacked=True,
    )
    assert svg.count('<rect class="chart-bar"') == 3  # zero values draw nothing
    assert "A — #2: -30" in svg


def test_chart_text_from_data_is_escaped():
    svg = charts.bar_chart(
        title="<b>Title</b>",
        labels=['<script>alert("x")</script>'],
        series=[charts.Series("Tom & Jerry's", [3])],
    )
    assert "<script>" not in svg and "<b>" not in svg
    assert "&lt;script&gt;" in svg and "Tom &amp; Jerry&#x27;s" in svg


def test_a_chart_without_data_says_so():
    svg = charts.line_chart(title="Empty", labels=["a", "b"], series=[charts.Series("x", [0, 0])])
    assert "No data in this period" in svg and "<path" not in svg


def test_nice_ticks_are_round_and_include_zero():
    assert charts.nice_ticks(0, 97) == [0, 20, 40, 60, 80, 100]
    ticks = charts.nice_ticks(-30, 12.5)
    assert ticks[0] <= -30 and ticks[-1] >= 12.5 and 0 in ticks


# --------------------------------------------------------------------------- metrics


@pytest.fixture
def metrics_world(db, programme):
    """Four members, two brands; 'now' is fixed. Previous window: A and B active. Current
    window: A buys twice (two brands), C buys and redeems at one brand, D buys once."""
    now = timezone.now().replace(microsecond=0)
    p1, _ = factories.onboarded_partner(code="ONE", name="Brand One")
    p2, _ = factories.onboarded_partner(code="TWO", name="Brand Two")
    long_ago = now - timedelta(days=200)
    a, b, c, d = (
        ledger.member_create(email=f"{n}@example.com", display_name=n, now=long_ago) for n in "abcd"
    )

    def buy(partner, member, amount, days_ago):
        at = now - timedelta(days=days_ago)
        factories.purchase(partner, member, amount, occurred_at=at, now=at)

    buy(p1, a, "100", 100)  # previous window
    buy(p1, b, "300", 120)  # previous window only: not retained
    buy(p1, a, "100", 10)
    buy(p2, a, "50", 5)
    buy(p2, c, "200", 20)
    buy(p1, d, "100", 30)
    factories.burn(c, p2, 90, now=now - timedelta(days=2))
    return {"now": now, "p1": p1, "p2": p2}


def test_programme_metrics_follow_their_definitions(metrics_world):
    result = metrics.programme_metrics(days=90, now=metrics_world["now"])
    values = {metric.key: metric.value for metric in result.metrics}
    # issued in the window: 100 + 50 + 200 + 100 = 450 points on 450 USD of purchases
    assert values["earn_rate"] == Decimal(1)
    assert values["redemption_rate"] == Decimal(90) / Decimal(450)
    assert values["repurchase_rate"] == Decimal(1) / Decimal(3)  # a of a, c, d
    assert values["retention"] == Decimal(1) / Decimal(2)  # a of a, b
    assert values["cross_brand_share"] == Decimal(1) / Decimal(3)  # a of a, c, d
    per_month = Decimal(450) / (Decimal(4) * (Decimal(90) / metrics.DAYS_PER_MONTH))
    assert values["issued_per_member_month"] == per_month
    assert all(metric.definition for metric in result.metrics)
    assert result.get("redemption_rate").display == "20.0 %"


def test_metrics_over_an_empty_window_are_undefined_not_errors(db, programme):
    result = metrics.programme_metrics(days=30)
    assert {metric.value for metric in result.metrics} == {None}
    assert {metric.display for metric in result.metrics} == {"—"}


def test_daily_flows_and_outstanding_points_come_from_the_ledger(metrics_world):
    win = metrics.window(days=90, now=metrics_world["now"])
    flows = metrics.daily_flows(win=win)
    assert sum(flows.issued) == 450 and sum(flows.redeemed) == 90
    assert sum(flows.issued_by_partner["Brand One"]) == 200
    assert sum(flows.issued_by_partner["Brand Two"]) == 250
    assert sum(flows.redeemed_by_partner["Brand Two"]) == 90
    outstanding = metrics.outstanding_daily(win=win)
    assert outstanding.points[0] == 400  # a's and b's earlier purchases
    assert outstanding.points[-1] == 400 + 450 - 90
    assert len(outstanding.days) == len(flows.days)


# --------------------------------------------------------------------------- access


def test_the_dashboard_needs_a_staff_session(client, db, programme):
    response = client.get("/finance/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=/finance/")

    finance_data.staff("clerk")
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user(username="member-like", password="pw-123456789")
    client.login(username="member-like", password="pw-123456789")
    assert client.get("/finance/").status_code == 403
    assert (
        client.post("/finance/runs/create/", {"period_end": "2030-01-01T00:00"}).status_code == 403
    )
    assert not SettlementRun.objects.exists()


def test_the_overview_shows_metrics_with_definitions_and_charts(client, metrics_world):
    finance_data.staff("clerk")
    client.login(username="clerk", password=finance_data.STAFF_PASSWORD)
    page = client.get("/finance/?days=90").content.decode()
    assert page.count("<svg") == 6
    assert "Definition." in page and "Repurchase rate" in page and "90-day retention" in page
    assert 'class="chart-bar"' in page and 'class="chart-line"' in page
    assert "Brand One" in page and "Brand Two" in page


def test_the_overview_of_an_empty_programme_says_there_is_no_data(client, db, programme):
    finance_data.staff("clerk")
    client.login(username="clerk", password=finance_data.STAFF_PASSWORD)
    page = client.get("/finance/?days=oops").content.decode()
    assert page.count("<svg") == 6 and "No settlement runs yet" in page
    assert "Last 90 days" in page


# --------------------------------------------------------------------------- runs


@pytest.fixture
def world(db, stripe_emulator):
    stripe_emulator.reset()
    with finance_data.stripe_settings(stripe_emulator):
        coalition = finance_data.coalition_with_activity()
        finance_data.stripe_onboard(
            stripe_emulator,
            partners=[coalition.grocer, coalition.airline],
            charities=[coalition.charity],
        )
        yield coalition


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_a_run_from_draft_to_paid_with_segregation_of_duties(
    client, world, django_capture_on_commit_callbacks
):
    clerk, controller = finance_data.staff("clerk"), finance_data.staff("controller")
    client.login(username="clerk", password=finance_data.STAFF_PASSWORD)
    period_end = timezone.localtime(world.now + timedelta(minutes=1))

    created = client.post(
        "/finance/runs/create/",
        {"period_end": period_end.strftime("%Y-%m-%dT%H:%M")},
        follow=True,
    )
    run = SettlementRun.objects.get()
    assert run.status == "draft" and run.created_by == clerk
    assert created.redirect_chain[-1][0] == f"/finance/runs/{run.pk}/"
    assert set(run.lines.values_list("direction", flat=True)) == {"collect", "pay_out"}

    # the creator cannot approve: the service's refusal is shown, nothing changes
    transitions = SettlementTransition.objects.count()
    refused = client.post(f"/finance/runs/{run.pk}/approve/", follow=True)
    assert any("Segregation of duties" in m for m in _messages(refused))
    run.refresh_from_db()
    assert run.status == "draft" and run.approved_by is None
    assert SettlementTransition.objects.count() == transitions

    client.logout()
    client.login(username="controller", password=finance_data.STAFF_PASSWORD)
    client.post(f"/finance/runs/{run.pk}/approve/")
    run.refresh_from_db()
    assert run.status == "approved" and run.approved_by == controller

    with django_capture_on_commit_callbacks(execute=True):  # execution runs after commit
        client.post(f"/finance/runs/{run.pk}/execute/")
    run.refresh_from_db()
    assert run.status == "completed"
    assert set(run.lines.values_list("status", flat=True)) == {"paid"}
    page = client.get(f"/finance/runs/{run.pk}/").content.decode()
    assert page.count('data-testid="line-status">Paid<') == run.lines.count()
    assert "refreshes every" not in page  # no more refresh once nothing moves

    reconciled = client.post(f"/finance/runs/{run.pk}/reconcile/", follow=True)
    assert "Clean" in reconciled.content.decode()
    assert run.reconciliations.latest("id").clean


def test_an_executing_run_refreshes_itself(client, world):
    clerk, controller = finance_data.staff("clerk"), finance_data.staff("controller")
    from settlement import services as settlement_services

    run = settlement_services.run_create(period_end=world.now, created_by=clerk)
    settlement_services.run_approve(run=run, approved_by=controller)
    SettlementRun.objects.filter(pk=run.pk).update(status="executing")  # as a worker sees it
    client.login(username="clerk", password=finance_data.STAFF_PASSWORD)
    page = client.get(f"/finance/runs/{run.pk}/").content.decode()
    assert "location.reload()" in page and "refreshes every 3 seconds" in page


def test_statements_are_linked_per_counterparty_and_download_for_finance(client, world):
    clerk = finance_data.staff("clerk")
    from django.contrib.auth.models import Permission

    clerk.user_permissions.add(Permission.objects.get(codename="view_finance"))
    from settlement import services as settlement_services

    run = settlement_services.run_create(period_end=world.now, created_by=clerk)
    # Staff without the finance permissions see no run (nor its statements) at all.
    finance_data.staff("no-statements").groups.clear()
    client.login(username="no-statements", password=finance_data.STAFF_PASSWORD)
    refused = client.get(f"/finance/runs/{run.pk}/")
    assert refused.status_code == 403 and b"api.view_finance" in refused.content
    client.login(username="clerk", password=finance_data.STAFF_PASSWORD)
    page = client.get(f"/finance/runs/{run.pk}/").content.decode()
    grocer_url = f"/settlement/runs/{run.pk}/statements/partner/{world.grocer.pk}.csv"
    charity_url = f"/settlement/runs/{run.pk}/statements/charity/{world.charity.pk}.csv"
    assert grocer_url in page and charity_url in page
    statement = client.get(grocer_url)
    assert statement.status_code == 200 and statement["Content-Type"].startswith("text/csv")
    net = run.lines.get(partner=world.grocer).net_amount
    assert finance_data.statement_net(statement.content.decode()) == ("Net: collect", net)


def test_a_bad_period_end_and_a_second_open_run_are_refused(client, world):
    finance_data.staff("clerk")
    client.login(username="clerk", password=finance_data.STAFF_PASSWORD)
    bad = client.post("/finance/runs/create/", {"period_end": "yesterday"}, follow=True)
    assert any("period end" in m for m in _messages(bad))
    assert not SettlementRun.objects.exists()
    client.post("/finance/runs/create/", {"period_end": "2020-01-01T00:00"})
    second = client.post("/finance/runs/create/", {"period_end": "2020-02-01T00:00"}, follow=True)
    assert any("still draft" in m for m in _messages(second))
    assert SettlementRun.objects.count() == 1


def test_a_failed_line_can_be_retried_or_carried_forward(
    client, world, django_capture_on_commit_callbacks
):
    clerk, controller = finance_data.staff("clerk"), finance_data.staff("controller")
    from settlement import services as settlement_services

    run = settlement_services.run_create(period_end=world.now, created_by=clerk)
    settlement_services.run_approve(run=run, approved_by=controller)
    # the charity's connected account is gone: its transfer fails for good
    world.charity.stripe_account_id = "acct_missing000000"
    world.charity.save(update_fields=["stripe_account_id"])
    client.login(username="controller", password=finance_data.STAFF_PASSWORD)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/finance/runs/{run.pk}/execute/")
    run.refresh_from_db()
    failed = run.lines.get(charity=world.charity)
    assert run.status == "partially_failed" and failed.status == "failed"
    page = client.get(f"/finance/runs/{run.pk}/").content.decode()
    assert f"/finance/lines/{failed.pk}/retry/" in page

    carried = client.post(f"/finance/lines/{failed.pk}/carry-forward/", follow=True)
    failed.refresh_from_db()
    run.refresh_from_db()
    assert failed.status == SettlementLine.Status.CARRIED_FORWARD
    assert run.status == "completed"
    assert any("carried forward" in m for m in _messages(carried))
