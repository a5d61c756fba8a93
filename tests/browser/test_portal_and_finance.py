"""In a real browser: a member redeems, donates (seeing the value first) and downloads the
receipt on a phone-sized screen; finance creates a run, a second staff member approves and
executes it and sees the lines paid; the dashboard's charts are drawn; an executing run's
page follows its lines by itself.

The live server and the tests share a PostgreSQL database (transactional: the ledger's
triggers need the real thing). Data is built through the services; Stripe is the emulator.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from charity.models import Donation
from partners.models import RewardRedemption
from settlement.models import SettlementRun
from tests.web import finance_data

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


@pytest.fixture
def stripe(stripe_emulator):
    """The gateway pointed at the emulator, wiped for this test."""
    stripe_emulator.reset()
    with finance_data.stripe_settings(stripe_emulator):
        yield stripe_emulator


@pytest.fixture
def coalition(stripe):
    world = finance_data.coalition_with_activity()
    finance_data.stripe_onboard(
        stripe, partners=[world.grocer, world.airline], charities=[world.charity]
    )
    return world


def finance_staff(username: str):
    """Finance staff as the demo has them: staff, with the finance API permissions (the
    statement downloads check api.view_finance)."""
    user = finance_data.staff(username)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="api",
            codename__in=["view_finance", "manage_settlement", "approve_settlement"],
        )
    )
    return user


def staff_login(page, base_url: str, username: str, next_path: str = "/finance/") -> None:
    page.goto(f"{base_url}/admin/login/?next={next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", finance_data.STAFF_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(re.escape(next_path) + r"$"))


def test_a_member_redeems_donates_and_downloads_the_receipt(
    live_server, coalition, new_page, screenshot, tmp_path
):
    page = new_page(phone=True)
    page.goto(f"{live_server.url}/portal/login/")
    screenshot(page, "login")
    page.fill("#email", coalition.member.email)
    page.fill("#password", finance_data.MEMBER_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/portal/")
    assert page.get_by_test_id("balance").inner_text() == "4200"
    screenshot(page, "home")

    # redeem a reward (the page asks to confirm)
    page.click("nav >> text=Rewards")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("reward").filter(has_text="Lounge pass").get_by_role("button").click()
    page.wait_for_selector(".messages .success")
    assert "Redeemed Lounge pass for 500 points" in page.inner_text(".messages")
    screenshot(page, "reward-redeemed")

    # donate: the value is shown before anything is given
    page.click("nav >> text=Give")
    page.check(f"input[name=charity][value='{coalition.charity.pk}']")
    page.fill("#points", "1000")
    screenshot(page, "give")
    page.click("text=Review donation")
    summary = page.get_by_test_id("donation-summary").inner_text()
    assert summary == f"1000 points = $10.00 to {coalition.charity.name}"
    assert not Donation.objects.filter(member=coalition.member).exists()
    screenshot(page, "confirm-donation")
    page.get_by_test_id("confirm-donation").click()
    page.wait_for_url(f"{live_server.url}/portal/receipts/")
    donation = Donation.objects.get(member=coalition.member)
    assert donation.points == 1000
    assert donation.receipt_number in page.inner_text(".messages .success")
    screenshot(page, "receipts")

    # download the receipt, then open the printable one
    with page.expect_download() as download_info:
        page.get_by_test_id("receipt-download").first.click()
    download = download_info.value
    assert download.suggested_filename == f"receipt-{donation.receipt_number}.html"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    text = saved.read_text()
    assert donation.receipt_number in text and coalition.charity.name in text
    page.click(f"a[href='/charity/receipts/{donation.receipt_number}/']")
    page.wait_for_url(f"**/charity/receipts/{donation.receipt_number}/")
    assert "Donation receipt" in page.inner_text("h1")
    screenshot(page, "receipt")

    assert RewardRedemption.objects.filter(member=coalition.member).count() == 1
    page.goto(f"{live_server.url}/portal/")
    assert page.get_by_test_id("balance").inner_text() == str(4200 - 500 - 1000)


def test_finance_creates_a_run_another_approves_executes_and_sees_lines_paid(
    live_server, coalition, new_page, screenshot, tmp_path
):
    finance_staff("clerk")
    finance_staff("controller")
    clerk = new_page()
    staff_login(clerk, live_server.url, "clerk", "/finance/runs/")
    screenshot(clerk, "runs")
    clerk.get_by_test_id("create-run").get_by_role("button").click()
    clerk.wait_for_url(re.compile(r"/finance/runs/\d+/$"))
    run = SettlementRun.objects.get()
    assert clerk.get_by_test_id("run-status").inner_text() == "Draft"
    assert clerk.get_by_test_id("line-row").count() == run.lines.count() == 3
    screenshot(clerk, "draft")

    # the creator may not approve: the service's refusal is shown
    clerk.get_by_test_id("approve").click()
    clerk.wait_for_selector(".messages .error")
    assert "Segregation of duties" in clerk.inner_text(".messages")
    assert clerk.get_by_test_id("run-status").inner_text() == "Draft"
    screenshot(clerk, "approval-refused")

    controller = new_page()
    staff_login(controller, live_server.url, "controller", f"/finance/runs/{run.pk}/")
    controller.get_by_test_id("approve").click()
    controller.wait_for_selector(".messages .success")
    assert controller.get_by_test_id("run-status").inner_text() == "Approved"
    controller.once("dialog", lambda dialog: dialog.accept())
    controller.get_by_test_id("execute").click()
    controller.wait_for_selector("[data-testid=run-status]:has-text('Completed')")
    statuses = controller.get_by_test_id("line-status").all_inner_texts()
    assert statuses == ["Paid"] * 3
    screenshot(controller, "paid")

    controller.get_by_test_id("reconcile").click()
    controller.wait_for_selector(".messages .success")
    assert "Clean" in controller.get_by_test_id("reconciliation").inner_text()
    screenshot(controller, "reconciled")

    with controller.expect_download() as download_info:
        controller.get_by_test_id("line-row").filter(has_text="Green Grocer").get_by_test_id(
            "statement-link"
        ).click()
    saved = tmp_path / "statement.csv"
    download_info.value.save_as(saved)
    net = run.lines.get(partner=coalition.grocer).net_amount
    assert finance_data.statement_net(saved.read_text()) == ("Net: collect", net)
    run.refresh_from_db()
    assert run.status == "completed" and run.approved_by.username == "controller"


def test_the_dashboard_draws_its_charts(live_server, coalition, new_page, screenshot):
    from settlement import services as settlement_services

    clerk, controller = finance_staff("clerk"), finance_staff("controller")
    run = settlement_services.run_create(period_end=timezone.now(), created_by=clerk)
    settlement_services.run_approve(run=run, approved_by=controller)
    page = new_page()
    staff_login(page, live_server.url, "clerk")
    charts = page.locator(".chart-card svg")
    assert charts.count() == 6
    for name in ("flows", "issued", "redeemed", "outstanding", "net", "donations"):
        chart = page.get_by_test_id(f"chart-{name}").locator("svg")
        marks = chart.locator("path.chart-line, rect.chart-bar")
        assert marks.count() > 0, f"chart {name} drew nothing"
        # as drawn on screen (so a stylesheet squashing the marks would show here too)
        tallest = chart.evaluate(
            "svg => Math.max(...[...svg.querySelectorAll('path.chart-line, rect.chart-bar')]"
            ".map(node => node.getBoundingClientRect().height))"
        )
        assert tallest > 20, f"chart {name}: its marks are {tallest}px high"
        assert chart.bounding_box()["height"] > 100
    assert "Definition." in page.get_by_test_id("metric-redemption_rate").inner_text()
    screenshot(page, "overview")


def test_an_executing_run_shows_its_lines_change_by_itself(
    live_server, coalition, new_page, screenshot, monkeypatch
):
    from settlement import services as settlement_services
    from settlement.services import runs as run_services

    clerk, controller = finance_staff("clerk"), finance_staff("controller")
    run = settlement_services.run_create(
        period_end=timezone.now() - timedelta(seconds=1), created_by=clerk
    )
    settlement_services.run_approve(run=run, approved_by=controller)
    # as with a real worker: execution is queued, not done in the request
    monkeypatch.setattr(run_services, "_enqueue_execution", lambda run_id: None)
    settlement_services.run_execute(run=run, started_by=controller)

    page = new_page()
    staff_login(page, live_server.url, "clerk", f"/finance/runs/{run.pk}/")
    assert page.get_by_test_id("run-status").inner_text() == "Executing"
    assert page.get_by_test_id("line-status").all_inner_texts() == ["Pending"] * 3
    screenshot(page, "executing")

    settlement_services.run_execute_lines(run_id=run.pk)  # the worker does its job
    page.wait_for_selector("[data-testid=run-status]:has-text('Completed')", timeout=15_000)
    assert page.get_by_test_id("line-status").all_inner_texts() == ["Paid"] * 3
    screenshot(page, "completed-by-itself")
