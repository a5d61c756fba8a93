"""executeSettlementRun: finance staff (manage_settlement) start paying an approved run."""

import pytest

from settlement.models import SettlementRun
from tests.api.conftest import APPROVE_RUN, CALLERS, CREATE_RUN, EXECUTE_RUN, now_iso
from tests.api.test_create_settlement_run import settlement_state


@pytest.fixture
def draft(api, shopper, finance_token):
    payload = api.mutate(
        "createSettlementRun", CREATE_RUN, {"periodEnd": now_iso()}, token=finance_token
    )
    return payload["run"]["id"]


@pytest.fixture
def approved(api, draft, approver_token):
    api.mutate("approveSettlementRun", APPROVE_RUN, {"runId": draft}, token=approver_token)
    return draft


@pytest.mark.django_db
def test_an_approved_run_starts_executing(api, approved, finance_token):
    payload = api.mutate(
        "executeSettlementRun", EXECUTE_RUN, {"runId": approved}, token=finance_token
    )

    # The Stripe work itself is a Celery task started after the commit.
    assert payload == {"run": {"id": approved, "status": "EXECUTING"}, "errors": []}


@pytest.mark.django_db
def test_a_draft_cannot_be_executed(api, draft, finance_token):
    before = settlement_state()

    payload = api.mutate("executeSettlementRun", EXECUTE_RUN, {"runId": draft}, token=finance_token)

    assert [e["code"] for e in payload["errors"]] == ["INVALID_STATE"]
    assert settlement_state() == before


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
def test_permission_matrix(api, callers, caller, approved):
    before = settlement_state()

    payload = api.mutate(
        "executeSettlementRun", EXECUTE_RUN, {"runId": approved}, token=callers[caller]
    )

    if caller == "staff":
        assert payload["errors"] == []
        assert SettlementRun.objects.get().status == "executing"
    else:
        assert [e["code"] for e in payload["errors"]] == ["PERMISSION_DENIED"]
        assert settlement_state() == before
