"""createSettlementRun: finance staff (manage_settlement) open a draft run."""

import pytest

from settlement.models import SettlementRun
from tests.api.conftest import CALLERS, CREATE_RUN, everything, gid, now_iso, staff_token_for


def settlement_state() -> dict:
    from settlement.models import SettlementClaim, SettlementLine

    return {
        **everything(),
        "runs": list(SettlementRun.objects.values_list("id", "status")),
        "lines": SettlementLine.objects.count(),
        "claims": SettlementClaim.objects.count(),
    }


@pytest.mark.django_db
def test_staff_create_a_draft_with_its_lines(api, brand, shopper, finance_token):
    payload = api.mutate(
        "createSettlementRun", CREATE_RUN, {"periodEnd": now_iso()}, token=finance_token
    )

    assert payload["errors"] == []
    run = SettlementRun.objects.get()
    assert payload["run"]["id"] == gid("SettlementRun", run.pk)
    assert payload["run"]["status"] == "DRAFT"
    (line,) = payload["run"]["lines"]
    assert line["partner"] == {"code": brand.partner.code}
    assert line["issuedPoints"] == 1000
    assert line["netAmount"]["currency"] == "USD"
    assert line["direction"] in ("COLLECT", "CARRY_FORWARD")


@pytest.mark.django_db
def test_only_one_run_may_be_open(api, shopper, finance_token):
    api.mutate("createSettlementRun", CREATE_RUN, {"periodEnd": now_iso()}, token=finance_token)
    before = settlement_state()

    payload = api.mutate(
        "createSettlementRun", CREATE_RUN, {"periodEnd": now_iso()}, token=finance_token
    )

    assert [(e["code"], e["field"]) for e in payload["errors"]] == [
        ("INVALID_STATE", "input.periodEnd")
    ]
    assert settlement_state() == before


@pytest.mark.django_db
def test_a_period_end_without_time_zone_is_refused(api, finance_token):
    response = api(CREATE_RUN, {"input": {"periodEnd": "2026-01-01T00:00:00"}}, token=finance_token)

    assert response.status == 400
    assert "time zone" in response.errors[0]["message"]
    assert not SettlementRun.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
def test_permission_matrix(api, callers, caller):
    before = settlement_state()

    payload = api.mutate(
        "createSettlementRun", CREATE_RUN, {"periodEnd": now_iso()}, token=callers[caller]
    )

    if caller == "staff":
        assert payload["errors"] == []
    else:
        assert [e["code"] for e in payload["errors"]] == ["PERMISSION_DENIED"]
        assert payload["run"] is None
        assert settlement_state() == before


@pytest.mark.django_db
def test_staff_without_finance_permissions_are_refused(api, django_user_model):
    clerk = django_user_model.objects.create_user(username="clerk", is_staff=True)
    token = staff_token_for(clerk, finance=False)
    before = settlement_state()

    payload = api.mutate("createSettlementRun", CREATE_RUN, {"periodEnd": now_iso()}, token=token)

    assert [e["code"] for e in payload["errors"]] == ["PERMISSION_DENIED"]
    assert settlement_state() == before
