"""The finance admin: runs with their lines, transitions, reconciliation and statement
links; creation and transitions through the services, segregation of duties included."""

import pytest
from django.urls import reverse

from settlement.models import SettlementRun
from tests import factories

from .conftest import days, make_partner

pytestmark = pytest.mark.django_db


@pytest.fixture
def admins(django_user_model):
    return (
        django_user_model.objects.create_superuser("admin-one", password="x-Str0ng-pass"),
        django_user_model.objects.create_superuser("admin-two", password="x-Str0ng-pass"),
    )


@pytest.fixture
def activity(settlement_programme, base_time, post):
    partner = make_partner("ADMINBRAND", issuance="0.01", redemption="0.008",
                           valid_from=base_time - days(9))  # fmt: skip
    post.earn(factories.member(), partner, 3_000, base_time - days(1))
    return partner


def test_a_run_is_created_shown_and_approved_from_the_admin(client, admins, activity, base_time):
    creator, other = admins
    client.force_login(creator)

    response = client.post(
        reverse("admin:settlement_settlementrun_add"),
        {
            "period_end_0": base_time.strftime("%Y-%m-%d"),
            "period_end_1": base_time.strftime("%H:%M:%S"),
        },
    )

    assert response.status_code == 302, response.content[:2000]
    run = SettlementRun.objects.get()
    assert run.created_by == creator and run.claimed_transactions == 1

    page = client.get(reverse("admin:settlement_settlementrun_change", args=[run.pk]))
    assert page.status_code == 200
    content = page.content.decode()
    assert "ADMINBRAND" in content and f"/settlement/runs/{run.pk}/statements/partner/" in content
    assert f"/settlement/runs/{run.pk}/lines.csv" in content
    assert client.get(reverse("admin:settlement_settlementrun_changelist")).status_code == 200

    # Segregation of duties: the creator's approval is refused...
    changelist = reverse("admin:settlement_settlementrun_changelist")
    client.post(changelist, {"action": "approve", "_selected_action": [run.pk]})
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.DRAFT
    # ...another admin's is not.
    client.force_login(other)
    client.post(changelist, {"action": "approve", "_selected_action": [run.pk]})
    run.refresh_from_db()
    assert (run.status, run.approved_by) == (SettlementRun.Status.APPROVED, other)


def test_the_line_and_event_admin_pages_render(client, admins, activity, base_time, finance):
    from settlement import services

    run = services.run_create(period_end=base_time, created_by=finance)
    client.force_login(admins[0])
    line = run.lines.get()

    for url in (
        reverse("admin:settlement_settlementline_changelist"),
        reverse("admin:settlement_settlementline_change", args=[line.pk]),
        reverse("admin:settlement_stripeevent_changelist"),
        reverse("admin:settlement_connectedpayout_changelist"),
    ):
        assert client.get(url).status_code == 200, url
