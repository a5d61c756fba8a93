"""Staff status alone moves no money and changes nobody's state: the finance dashboard, the
settlement services and every admin action that changes something ask for the permission
that the API asks for (api.view_finance, api.manage_settlement, api.approve_settlement) or
for the model's change permission. A refusal writes nothing."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

from api.core.auth import staff_token_create
from api.models import StaffToken
from coalition.errors import PermissionDenied
from coalition.models import Member
from partners.models import Partner
from settlement import services as settlement_services
from settlement.models import SettlementRun, SettlementTransition
from tests import factories

pytestmark = pytest.mark.django_db

PASSWORD = "x-Str0ng-pass"


def staff_with(username: str, *codenames: str):
    """An active staff user holding exactly these permissions (app_label.codename)."""
    user = get_user_model().objects.create_user(username=username, password=PASSWORD, is_staff=True)
    for name in codenames:
        app_label, codename = name.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


def action(client, changelist: str, name: str, ids: list[int]):
    return client.post(
        changelist, {"action": name, "_selected_action": [str(pk) for pk in ids]}, follow=True
    )


def test_a_staff_user_without_finance_permissions_cannot_open_the_dashboard(client, programme):
    staff_with("viewer", "settlement.view_settlementrun")
    client.login(username="viewer", password=PASSWORD)

    for url in ("/finance/", "/finance/runs/"):
        response = client.get(url)
        assert response.status_code == 403
        assert b"api.view_finance" in response.content
    refused = client.post("/finance/runs/create/", {"period_end": "2030-01-01T00:00"})
    assert refused.status_code == 403
    assert not SettlementRun.objects.exists()


def test_reading_the_figures_is_not_enough_to_create_or_approve_a_run(programme):
    reader = staff_with("reader", "api.view_finance")
    maker = staff_with("maker", "api.view_finance", "api.manage_settlement")
    checker = staff_with("checker", "api.view_finance", "api.manage_settlement")

    with pytest.raises(PermissionDenied, match="api.manage_settlement"):
        settlement_services.run_create(period_end=timezone.now(), created_by=reader)
    assert not SettlementRun.objects.exists()

    run = settlement_services.run_create(period_end=timezone.now(), created_by=maker)
    # Managing runs is not approving them: that needs its own permission.
    with pytest.raises(PermissionDenied, match="api.approve_settlement"):
        settlement_services.run_approve(run=run, approved_by=checker)
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.DRAFT and run.approved_by is None
    transitions = SettlementTransition.objects.filter(run=run)
    assert list(transitions.values_list("to_status", flat=True)) == ["draft"]

    checker.user_permissions.add(Permission.objects.get(codename="approve_settlement"))
    checker = get_user_model().objects.get(pk=checker.pk)  # permissions are cached per object
    settlement_services.run_approve(run=run, approved_by=checker)
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.APPROVED


def a_draft_and_a_session_of(client, username: str, *codenames: str) -> SettlementRun:
    """A draft run made by finance staff, and `client` logged in as a staff user holding
    just `codenames`."""
    run = settlement_services.run_create(
        period_end=timezone.now(), created_by=factories.finance_staff("maker")
    )
    staff_with(username, *codenames)
    client.login(username=username, password=PASSWORD)
    return run


def test_the_dashboard_shows_a_managers_refusal_and_changes_nothing(client, programme):
    run = a_draft_and_a_session_of(client, "reader", "api.view_finance")

    page = client.post(f"/finance/runs/{run.pk}/approve/", follow=True).content.decode()
    assert "api.approve_settlement" in page
    page = client.post(f"/finance/runs/{run.pk}/discard/", follow=True).content.decode()
    assert "api.manage_settlement" in page
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.DRAFT


def test_admin_settlement_actions_need_the_finance_permissions(client, programme):
    run = a_draft_and_a_session_of(client, "viewer", "settlement.view_settlementrun")
    changelist = "/admin/settlement/settlementrun/"

    page = client.get(changelist).content.decode()
    assert 'value="approve"' not in page and 'value="discard"' not in page
    for name in ("approve", "execute", "discard", "reconcile"):
        action(client, changelist, name, [run.pk])
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.DRAFT and run.approved_by is None

    approver = staff_with("approver", "settlement.view_settlementrun", "api.approve_settlement")
    client.force_login(approver)
    assert 'value="approve"' in client.get(changelist).content.decode()
    action(client, changelist, "approve", [run.pk])
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.APPROVED


def test_admin_actions_that_change_state_need_the_change_permission(client, programme):
    partner, _ = factories.onboarded_partner()
    member = factories.member()
    superuser = get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)
    staff_token_create(user=superuser)
    staff_with(
        "viewer",
        "partners.view_partner",
        "coalition.view_member",
        "api.view_stafftoken",
    )
    client.login(username="viewer", password=PASSWORD)

    action(client, "/admin/partners/partner/", "suspend", [partner.pk])
    action(client, "/admin/coalition/member/", "suspend", [member.pk])
    token = StaffToken.objects.get(user=superuser)
    action(client, "/admin/api/stafftoken/", "revoke", [token.pk])

    partner.refresh_from_db()
    member.refresh_from_db()
    token.refresh_from_db()
    assert partner.status == Partner.Status.ACTIVE
    assert member.status == Member.Status.ACTIVE
    assert token.revoked_at is None

    editor = staff_with(
        "editor", "partners.change_partner", "partners.view_partner", "api.change_stafftoken"
    )
    client.force_login(editor)
    action(client, "/admin/partners/partner/", "suspend", [partner.pk])
    action(client, "/admin/api/stafftoken/", "revoke", [token.pk])
    partner.refresh_from_db()
    token.refresh_from_db()
    assert partner.status == Partner.Status.SUSPENDED
    assert token.revoked_at is not None
