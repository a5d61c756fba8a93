"""Who may do what (issue 9): every query and mutation of the schema × every kind of caller,
with the expected outcome in ONE table (`EXPECTED`). The operations are read from the schema
itself (`api.schema.schema`): a new operation without a row here fails the suite, so nobody
adds an operation without deciding who may call it.

Outcomes:
- ALLOW   the caller may: an answer with data (a business refusal such as INVALID_STATE
          still counts: the permission held);
- DENY    PERMISSION_DENIED, before anything is read or written;
- HIDDEN  permitted, but the object is not the caller's to see: null or NOT_FOUND, exactly as
          for an object that does not exist.
"""

from __future__ import annotations

import json
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from graphql_relay import to_global_id

from api.schema import schema as api_schema
from tests import factories
from tests.api.conftest import everything, key_for, member_with_password, staff_token_for, token_for

pytestmark = pytest.mark.django_db

ALLOW, DENY, HIDDEN = "ALLOW", "DENY", "HIDDEN"
CALLERS = [
    "anonymous",
    "member",
    "other_member",
    "partner_earn",
    "partner_burn",
    "partner_read",
    "other_partner",
    "staff_without_permission",
    "staff_with_permission",
]


def row(*outcomes: str) -> dict[str, str]:
    assert len(outcomes) == len(CALLERS)
    return dict(zip(CALLERS, outcomes, strict=True))


A, D, H = ALLOW, DENY, HIDDEN
# fmt: off
#                                anon member other  p:earn p:burn p:read other_p staff- staff+
EXPECTED: dict[str, dict[str, str]] = {
    "Query.settlementRuns":          row(D, D, D, D, D, D, D, D, A),
    "Query.liability":               row(D, D, D, D, D, D, D, D, A),
    "Query.charities":               row(A, A, A, A, A, A, A, A, A),
    "Query.givingPreferences":       row(D, A, A, D, D, D, D, D, D),
    "Query.partners":                row(A, A, A, A, A, A, A, A, A),
    "Query.me":                      row(D, A, A, D, D, D, D, D, D),
    "Query.member":                  row(D, D, D, D, D, A, A, D, A),
    "Query.node":                    row(H, A, H, A, A, A, H, H, A),
    "Mutation.createSettlementRun":  row(D, D, D, D, D, D, D, D, A),
    "Mutation.approveSettlementRun": row(D, D, D, D, D, D, D, D, A),
    "Mutation.executeSettlementRun": row(D, D, D, D, D, D, D, D, A),
    "Mutation.discardSettlementRun": row(D, D, D, D, D, D, D, D, A),
    "Mutation.reconcileSettlementRun": row(D, D, D, D, D, D, D, D, A),
    "Mutation.retrySettlementLine":  row(D, D, D, D, D, D, D, D, A),
    "Mutation.carryForwardSettlementLine": row(D, D, D, D, D, D, D, D, A),
    "Mutation.donatePoints":         row(D, A, A, D, D, D, D, D, D),
    "Mutation.updateGivingPreferences": row(D, A, A, D, D, D, D, D, D),
    "Mutation.memberLogin":          row(A, A, A, A, A, A, A, A, A),
    "Mutation.enrollMember":         row(D, D, D, A, D, D, A, D, D),
    "Mutation.recordPurchase":       row(D, D, D, A, D, D, A, D, D),
    "Mutation.recordPurchases":      row(D, D, D, A, D, D, A, D, D),
    "Mutation.redeemPoints":         row(D, D, D, D, A, D, A, D, D),
    "Mutation.authorizeRedemption":  row(D, D, D, D, A, D, A, D, D),
    "Mutation.captureRedemption":    row(D, D, D, D, A, D, H, D, D),
    "Mutation.voidRedemption":       row(D, D, D, D, A, D, H, D, D),
    "Mutation.reverseTransaction":   row(D, D, D, A, D, D, H, D, D),
    "Mutation.registerWebhookEndpoint": row(D, D, D, A, A, A, A, D, D),
}
# fmt: on


def schema_operations() -> set[str]:
    graphql_schema = api_schema.graphql_schema
    names = {f"Query.{name}" for name in graphql_schema.query_type.fields}
    names |= {f"Mutation.{name}" for name in graphql_schema.mutation_type.fields}
    return names


def test_every_operation_of_the_schema_is_in_the_table():
    missing = sorted(schema_operations() - set(EXPECTED))
    stale = sorted(set(EXPECTED) - schema_operations())
    assert not missing, f"decide who may call these, in EXPECTED: {missing}"
    assert not stale, f"no longer in the schema: {stale}"


# --------------------------------------------------------------------------- the world


@pytest.fixture
def world(programme, staff_user, django_user_model, settings):
    """A partner whose member (the shopper) earned, held and is known to it, and every
    caller's credential."""
    partner, _ = factories.onboarded_partner()
    other_partner, _ = factories.onboarded_partner()
    shopper = member_with_password()
    other = member_with_password()
    earn = factories.earn(shopper, partner, 2000)
    charity = factories.CharityFactory()
    staff_plain = django_user_model.objects.create_user(username="plain", is_staff=True)
    creator = factories.finance_staff("creator")
    from settlement.services import run_create

    settings.SETTLEMENT_MINIMUM = "0"
    run = run_create(period_end=timezone.now(), created_by=creator)
    return SimpleNamespace(
        partner=partner,
        shopper=shopper,
        earn=earn,
        charity=charity,
        run=run,
        tokens={
            "anonymous": None,
            "member": token_for(shopper),
            "other_member": token_for(other),
            "partner_earn": key_for(partner, ["earn"]),
            "partner_burn": key_for(partner, ["burn"]),
            "partner_read": key_for(partner, ["read"]),
            "other_partner": key_for(other_partner),
            "staff_without_permission": staff_token_for(staff_plain, finance=False),
            "staff_with_permission": staff_token_for(staff_user),
        },
    )


def requests_for(world, caller: str) -> dict[str, tuple[str, dict]]:
    """One well-formed request per operation, about the shopper's and the partner's things.
    Objects a caller's write needs (a hold) are created for that caller's attempt."""
    number = world.shopper.member_number
    hold = factories.hold(world.shopper, world.partner, 10)
    txn = to_global_id("PointsTransaction", world.earn.pk)
    run = to_global_id("SettlementRun", world.run.pk)
    line = to_global_id("SettlementLine", world.run.lines.order_by("id").first().pk)

    def mutation(name, input_type, input_, selection="errors { code }"):
        document = f"mutation($input: {input_type}!) {{ {name}(input: $input) {{ {selection} }} }}"
        return document, {"input": input_}

    return {
        "Query.settlementRuns": ("{ settlementRuns { totalCount } }", {}),
        "Query.liability": ("{ liability { outstandingPoints } }", {}),
        "Query.charities": ("{ charities { totalCount } }", {}),
        "Query.givingPreferences": ("{ givingPreferences { roundUpPercent } }", {}),
        "Query.partners": ("{ partners { code } }", {}),
        "Query.me": ("{ me { memberNumber } }", {}),
        "Query.member": (
            "query($n: String!) { member(memberNumber: $n) { memberNumber } }",
            {"n": number},
        ),
        "Query.node": ("query($id: ID!) { node(id: $id) { id } }", {"id": txn}),
        "Mutation.createSettlementRun": mutation(
            "createSettlementRun",
            "CreateSettlementRunInput",
            {"periodEnd": (timezone.now() - timedelta(seconds=1)).isoformat()},
        ),
        "Mutation.approveSettlementRun": mutation(
            "approveSettlementRun", "SettlementRunActionInput", {"runId": run}
        ),
        "Mutation.executeSettlementRun": mutation(
            "executeSettlementRun", "SettlementRunActionInput", {"runId": run}
        ),
        "Mutation.discardSettlementRun": mutation(
            "discardSettlementRun", "DiscardSettlementRunInput", {"runId": run, "reason": "t"}
        ),
        "Mutation.reconcileSettlementRun": mutation(
            "reconcileSettlementRun", "SettlementRunActionInput", {"runId": run}
        ),
        "Mutation.retrySettlementLine": mutation(
            "retrySettlementLine", "SettlementLineActionInput", {"lineId": line}
        ),
        "Mutation.carryForwardSettlementLine": mutation(
            "carryForwardSettlementLine", "SettlementLineActionInput", {"lineId": line}
        ),
        "Mutation.donatePoints": mutation(
            "donatePoints",
            "DonatePointsInput",
            {
                "charityId": to_global_id("Charity", world.charity.pk),
                "points": 100,
                "idempotencyKey": "d",
            },
        ),
        "Mutation.updateGivingPreferences": mutation(
            "updateGivingPreferences", "UpdateGivingPreferencesInput", {"roundUpPercent": None}
        ),
        "Mutation.memberLogin": mutation(
            "memberLogin",
            "MemberLoginInput",
            {"email": world.shopper.email, "password": "correct-horse-battery"},
        ),
        "Mutation.enrollMember": mutation(
            "enrollMember",
            "EnrollMemberInput",
            {"email": f"new-{caller}@example.com", "displayName": "N", "idempotencyKey": "e"},
        ),
        "Mutation.recordPurchase": mutation(
            "recordPurchase",
            "RecordPurchaseInput",
            {
                "memberNumber": number,
                "amount": "10.00",
                "currency": "USD",
                "reference": "r",
                "idempotencyKey": "p",
            },
        ),
        "Mutation.recordPurchases": mutation(
            "recordPurchases",
            "RecordPurchasesInput",
            {
                "idempotencyKey": "batch",
                "purchases": [
                    {
                        "memberNumber": number,
                        "amount": "10.00",
                        "currency": "USD",
                        "reference": "r",
                        "idempotencyKey": "pb",
                    }
                ],
            },
        ),
        "Mutation.redeemPoints": mutation(
            "redeemPoints",
            "RedeemPointsInput",
            {"memberNumber": number, "points": 5, "reference": "r", "idempotencyKey": "b"},
        ),
        "Mutation.authorizeRedemption": mutation(
            "authorizeRedemption",
            "AuthorizeRedemptionInput",
            {"memberNumber": number, "points": 5, "reference": "r", "idempotencyKey": "h"},
        ),
        "Mutation.captureRedemption": mutation(
            "captureRedemption",
            "CaptureRedemptionInput",
            {"holdId": to_global_id("RedemptionHold", hold.pk), "idempotencyKey": "c"},
        ),
        "Mutation.voidRedemption": mutation(
            "voidRedemption",
            "VoidRedemptionInput",
            {"holdId": to_global_id("RedemptionHold", hold.pk), "idempotencyKey": "v"},
        ),
        "Mutation.reverseTransaction": mutation(
            "reverseTransaction",
            "ReverseTransactionInput",
            {"transactionId": txn, "points": 1, "idempotencyKey": "x"},
        ),
        "Mutation.registerWebhookEndpoint": mutation(
            "registerWebhookEndpoint",
            "RegisterWebhookEndpointInput",
            {"url": "https://example.com/hooks", "idempotencyKey": "w"},
        ),
    }


def outcome(status: int, body: dict, operation: str) -> str:
    field = operation.split(".", 1)[1]
    errors = list(body.get("errors") or [])
    data = (body.get("data") or {}).get(field)
    if isinstance(data, dict) and "errors" in data:
        errors += [{"extensions": {"code": error["code"]}} for error in data["errors"]]
    codes = {error.get("extensions", {}).get("code") for error in errors}
    if "PERMISSION_DENIED" in codes:
        return DENY
    assert status == 200, body
    assert "INTERNAL_ERROR" not in codes, body
    if "NOT_FOUND" in codes or data is None:
        return HIDDEN
    return ALLOW


def observe(client, world, operation: str, caller: str) -> tuple[str, bool]:
    """The caller's outcome; and, for a refusal, whether nothing changed."""
    cache.clear()  # rate limits
    with transaction.atomic():
        document, variables = requests_for(world, caller)[operation]
        before = everything()
        token = world.tokens[caller]
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
        response = client.post(
            "/graphql/",
            json.dumps({"query": document, "variables": variables}),
            content_type="application/json",
            **headers,
        )
        result = outcome(response.status_code, json.loads(response.content), operation)
        unchanged = everything() == before
        transaction.set_rollback(True)
    return result, unchanged


@pytest.mark.parametrize("operation", sorted(EXPECTED))
def test_who_may_call_each_operation(client, world, operation):
    observed = {}
    for caller in CALLERS:
        result, unchanged = observe(client, world, operation, caller)
        observed[caller] = result
        if result != ALLOW:
            assert unchanged, f"{operation} refused to {caller} but changed something"
    assert observed == EXPECTED[operation]
