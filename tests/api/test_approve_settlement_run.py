"""approveSettlementRun: finance staff (approve_settlement) approve a draft someone else
created."""

import pytest

from settlement.models import SettlementRun
from tests.api.conftest import APPROVE_RUN, CALLERS, CREATE_RUN, gid, now_iso
from tests.api.test_create_settlement_run import settlement_state


@pytest.fixture
def draft(api, shopper, finance_token):
    payload = api.mutate(
        "createSettlementRun", CREATE_RUN, {"periodEnd": now_iso()}, token=finance_token
    )
    return payload["run"]["id"]


@pytest.mark.django_db
def test_another_staff_member_approves(api, draft, approver_token):
    payload = api.mutate(
        "approveSettlementRun", APPROVE_RUN, {"runId": draft}, token=approver_token
    )

    assert payload == {"run": {"id": draft, "status": "APPROVED"}, "errors": []}


@pytest.mark.django_db
def test_the_creator_cannot_approve_their_own_run(api, draft, finance_token):
    before = settlement_state()

    payload = api.mutate("approveSettlementRun", APPROVE_RUN, {"runId": draft}, token=finance_token)

    assert [(e["code"], e["field"]) for e in payload["errors"]] == [
        ("PERMISSION_DENIED", "input.runId")
    ]
    assert settlement_state() == before


@pytest.mark.django_db
def test_only_a_draft_is_approved(api, draft, approver_token):
    api.mutate("approveSettlementRun", APPROVE_RUN, {"runId": draft}, token=approver_token)
    before = settlement_state()

    payload = api.mutate(
        "approveSettlementRun", APPROVE_RUN, {"runId": draft}, token=approver_token
    )

    assert [e["code"] for e in payload["errors"]] == ["INVALID_STATE"]
    assert settlement_state() == before


@pytest.mark.django_db
@pytest.mark.parametrize("run_id", ["garbage", gid("SettlementRun", 999), gid("Member", 1)])
def test_unknown_runs_are_not_found(api, approver_token, run_id):
    payload = api.mutate(
        "approveSettlementRun", APPROVE_RUN, {"runId": run_id}, token=approver_token
    )

    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("NOT_FOUND", "input.runId")]


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
def test_permission_matrix(api, callers, caller, draft):
    """The matrix's staff created the draft: even they are refused (segregation)."""
    before = settlement_state()

    payload = api.mutate(
        "approveSettlementRun", APPROVE_RUN, {"runId": draft}, token=callers[caller]
    )

    assert [e["code"] for e in payload["errors"]] == ["PERMISSION_DENIED"]
    assert SettlementRun.objects.get().status == "draft"
    assert settlement_state() == before
