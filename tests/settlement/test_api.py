"""Settlement through GraphQL beyond the contract's three mutations: the run's totals,
float and reconciliation as finance staff read them, discarding a draft, retrying or
carrying forward a failed line, reconciling on demand; refused to everyone else."""

import json

import pytest
from graphql_relay import to_global_id

from settlement.models import SettlementLine, SettlementRun
from tests.api.conftest import staff_token_for

pytestmark = pytest.mark.django_db

RUN_FIELDS = """
  id status currency claimedTransactions outstandingPointsEnd
  totalPaidOut { amount } totalCollected { amount } totalCarriedForward { amount }
  totalCarriedIn { amount } operatorRevenue { amount } spreadRevenue { amount }
  breakageRevenue { amount } matchRevenue { amount } roundingRevenue { amount }
  floatStart { amount } floatEnd { amount } linesExportUrl
  reconciliation { clean checkedLines stripeObjects
                   differences { kind lineId stripeId expected actual message } }
  lines { id partner { code } charity { name } matchedPoints netAmount { amount currency }
          carriedIn { amount } direction status stripeObjectId holdReason failureReason
          attempt statementUrl }
"""
RUNS = "query { settlementRuns(first: 5) { totalCount edges { node {" + RUN_FIELDS + "} } } }"
RECONCILE = (
    "mutation($input: SettlementRunActionInput!) { reconcileSettlementRun(input: $input)"
    " { run {" + RUN_FIELDS + "} errors { field code message } } }"
)
DISCARD = """mutation($input: DiscardSettlementRunInput!) { discardSettlementRun(input: $input)
  { run { id status } errors { field code message } } }"""
RETRY = """mutation($input: SettlementLineActionInput!) { retrySettlementLine(input: $input)
  { line { id status attempt } errors { field code message } } }"""
CARRY = """mutation($input: SettlementLineActionInput!) {
  carryForwardSettlementLine(input: $input)
  { line { id status direction holdReason } errors { field code message } } }"""
LIABILITY = """query { liability { outstandingPoints estimatedCost { amount currency }
  heldPoints costPerPoint breakagePoints12m breakageRevenue12m { amount } } }"""


def token(user, *, finance=True) -> str:
    return staff_token_for(user, finance=finance)


def gql(client, query, variables=None, *, bearer=None) -> dict:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {bearer}"} if bearer else {}
    response = client.post(
        "/graphql/",
        data=json.dumps({"query": query, "variables": variables or {}}),
        content_type="application/json",
        **headers,
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert not body.get("errors"), body["errors"]
    return body["data"]


def run_gid(run) -> str:
    return to_global_id("SettlementRun", run.pk)


def test_finance_reads_totals_float_and_reconciliation(
    client, stripe_bed, stripe_month, finance, approver, django_capture_on_commit_callbacks
):
    from settlement import services

    run = stripe_month["run"]
    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute(run=run, started_by=finance)

    data = gql(client, RUNS, bearer=token(approver))

    node = data["settlementRuns"]["edges"][0]["node"]
    assert node["status"] == "COMPLETED" and node["currency"] == "USD"
    assert (node["totalPaidOut"]["amount"], node["totalCollected"]["amount"]) == ("60.00", "200.00")
    assert node["reconciliation"] == {
        "clean": True,
        "checkedLines": 3,
        "stripeObjects": 3,
        "differences": [],
    }
    collected = float(node["totalCollected"]["amount"]) - float(node["totalPaidOut"]["amount"])
    revenue_and_float = (
        float(node["operatorRevenue"]["amount"])
        + float(node["floatEnd"]["amount"])
        - float(node["floatStart"]["amount"])
    )
    assert round(collected - revenue_and_float, 2) == 0
    assert node["linesExportUrl"] == f"/settlement/runs/{run.pk}/lines.csv"
    issuer = next(
        line for line in node["lines"] if line["partner"] and line["partner"]["code"] == "ISSUER"
    )
    assert issuer["statementUrl"].endswith(f"/statements/partner/{stripe_month['issuer'].pk}.csv")
    assert issuer["stripeObjectId"].startswith("pi_") and issuer["attempt"] == 1


def test_reconcile_on_demand_shows_a_planted_extra_transfer(
    client, stripe_bed, stripe_month, finance, approver, django_capture_on_commit_callbacks
):
    from settlement import services

    run = stripe_month["run"]
    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute(run=run, started_by=finance)
    extra = stripe_bed.client.v1.transfers.create(
        {"amount": 999, "currency": "usd", "destination": stripe_bed.account(),
         "transfer_group": run.transfer_group}
    )  # fmt: skip

    data = gql(client, RECONCILE, {"input": {"runId": run_gid(run)}}, bearer=token(approver))

    payload = data["reconcileSettlementRun"]
    assert payload["errors"] == []
    reconciliation = payload["run"]["reconciliation"]
    assert reconciliation["clean"] is False
    assert [(d["kind"], d["stripeId"]) for d in reconciliation["differences"]] == [
        ("extra", extra.id)
    ]


def test_a_failed_line_is_retried_or_carried_forward_through_the_api(
    client, stripe_bed, stripe_month, finance, approver, django_capture_on_commit_callbacks
):
    from settlement import services

    run = stripe_month["run"]
    stripe_bed.set_card(stripe_month["issuer"].stripe_customer_id, "pm_card_chargeCustomerFail")
    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute(run=run, started_by=finance)
    failed = SettlementLine.objects.get(run=run, status="failed")
    line_id = to_global_id("SettlementLine", failed.pk)
    bearer = token(approver)

    with django_capture_on_commit_callbacks(execute=True):
        retried = gql(client, RETRY, {"input": {"lineId": line_id}}, bearer=bearer)
    assert retried["retrySettlementLine"]["line"] == {
        "id": line_id,
        "status": "PENDING",  # as returned: execution ran after the commit
        "attempt": 2,
    }
    failed.refresh_from_db()
    assert failed.status == "failed" and failed.attempt == 2  # the card still declines

    carried = gql(client, CARRY, {"input": {"lineId": line_id, "reason": "card expired"}},
                  bearer=bearer)  # fmt: skip
    assert carried["carryForwardSettlementLine"]["line"] == {
        "id": line_id,
        "status": "CARRIED_FORWARD",
        "direction": "CARRY_FORWARD",
        "holdReason": "card expired",
    }
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.COMPLETED


def test_a_draft_is_discarded_and_a_partner_cannot(client, month_run, approver):
    from partners.services import api_key_create

    run, partner = month_run
    _, key = api_key_create(partner=partner)

    refused = gql(client, DISCARD, {"input": {"runId": run_gid(run)}}, bearer=key)
    assert [e["code"] for e in refused["discardSettlementRun"]["errors"]] == ["PERMISSION_DENIED"]
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.DRAFT

    done = gql(client, DISCARD, {"input": {"runId": run_gid(run)}}, bearer=token(approver))
    assert done["discardSettlementRun"] == {
        "run": {"id": run_gid(run), "status": "DISCARDED"},
        "errors": [],
    }


def test_staff_without_finance_permissions_cannot_reconcile(client, month_run, approver):
    run, _ = month_run
    bearer = token(approver, finance=False)

    data = gql(client, RECONCILE, {"input": {"runId": run_gid(run)}}, bearer=bearer)

    assert [e["code"] for e in data["reconcileSettlementRun"]["errors"]] == ["PERMISSION_DENIED"]
    assert not run.reconciliations.exists()


def test_liability_shows_breakage(client, month_run, approver):
    data = gql(client, LIABILITY, bearer=token(approver))

    liability = data["liability"]
    assert liability["outstandingPoints"] == 4_000
    assert liability["breakagePoints12m"] == 0
    assert liability["estimatedCost"]["currency"] == "USD"


@pytest.fixture
def month_run(settlement_programme, base_time, post, finance):
    from settlement import services
    from tests import factories

    from .conftest import days, make_partner

    partner = make_partner("APIBRAND", issuance="0.01", redemption="0.008",
                           valid_from=base_time - days(9))  # fmt: skip
    post.earn(factories.member(), partner, 4_000, base_time - days(1))
    return services.run_create(period_end=base_time, created_by=finance), partner
