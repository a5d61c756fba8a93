"""End to end over HTTP, as an integrator sees it: a real server (live_server), the `gql`
client, committed transactions. Enrol, earn, redeem at another brand, hold and capture,
refund, retry with the same key, and read it all back as the member."""

import io

import pytest
from django.core.management import call_command
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.requests import RequestsHTTPTransport

from coalition.selectors import ledger_check
from tests import factories


def client_for(live_server, token=None) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = RequestsHTTPTransport(
        url=f"{live_server.url}/graphql/", headers=headers, timeout=30, retries=0
    )
    return Client(transport=transport, fetch_schema_from_transport=False)


def run(client: Client, query: str, **variables) -> dict:
    return client.execute(GraphQLRequest(query, variable_values=variables or None))


ENROLL = """mutation($input: EnrollMemberInput!) { enrollMember(input: $input) {
  member { memberNumber } errors { code field message } } }"""
LOGIN = """mutation($input: MemberLoginInput!) { memberLogin(input: $input) {
  token errors { code } } }"""
RECORD = """mutation($input: RecordPurchaseInput!) { recordPurchase(input: $input) {
  pointsAwarded transaction { id } member { balance } errors { code field } } }"""
REDEEM = """mutation($input: RedeemPointsInput!) { redeemPoints(input: $input) {
  transaction { id points } discount { amount currency } member { balance } errors { code } } }"""
AUTHORIZE = """mutation($input: AuthorizeRedemptionInput!) { authorizeRedemption(input: $input) {
  hold { id status } member { balance heldPoints } errors { code } } }"""
CAPTURE = """mutation($input: CaptureRedemptionInput!) { captureRedemption(input: $input) {
  transaction { points } member { balance heldPoints } errors { code } } }"""
REVERSE = """mutation($input: ReverseTransactionInput!) { reverseTransaction(input: $input) {
  transaction { points reversalOf { id } } member { balance } errors { code } } }"""
ME = """{ me { balance heldPoints lifetimeEarned transactions(first: 20) {
  totalCount edges { node { kind points partner { code } } } } } }"""


# PostgreSQL: the test database is emptied with TRUNCATE afterwards; SQLite's ledger triggers
# refuse the DELETE that flushing it would take.
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_members_journey_over_http(live_server, settings):
    from coalition.services import programme_get

    programme = programme_get()
    programme.min_redemption_points = 1
    programme.save()
    grocer, grocer_key = factories.onboarded_partner(code="GROCER", earn_rate="2")
    airline, airline_key = factories.onboarded_partner(code="AIRLINE")
    at_grocer, at_airline = (
        client_for(live_server, grocer_key),
        client_for(live_server, airline_key),
    )

    # Enrol at the grocer, log in as the member.
    enrolled = run(
        at_grocer,
        ENROLL,
        input={
            "email": "ada@example.com",
            "displayName": "Ada",
            "password": "analytical-engine",
            "idempotencyKey": "enrol-ada",
        },
    )["enrollMember"]
    assert enrolled["errors"] == []
    number = enrolled["member"]["memberNumber"]
    login = run(
        client_for(live_server),
        LOGIN,
        input={"email": "ada@example.com", "password": "analytical-engine"},
    )["memberLogin"]
    as_member = client_for(live_server, login["token"])

    # Earn at the grocer; a retry with the same key changes nothing.
    purchase = {
        "memberNumber": number,
        "amount": "250.00",
        "currency": "USD",
        "reference": "till-1/0001",
        "idempotencyKey": "purchase-0001",
    }
    earned = run(at_grocer, RECORD, input=purchase)["recordPurchase"]
    assert (earned["pointsAwarded"], earned["member"]["balance"]) == (500, 500)
    assert run(at_grocer, RECORD, input=purchase)["recordPurchase"] == earned

    # Redeem at the airline, one-shot, then two-phase.
    redeemed = run(
        at_airline,
        REDEEM,
        input={
            "memberNumber": number,
            "points": 100,
            "reference": "PNR-X",
            "idempotencyKey": "r-1",
        },
    )
    assert redeemed["redeemPoints"]["discount"] == {"amount": "0.80", "currency": "USD"}
    assert redeemed["redeemPoints"]["member"]["balance"] == 400
    held = run(
        at_airline,
        AUTHORIZE,
        input={
            "memberNumber": number,
            "points": 150,
            "reference": "PNR-Y",
            "idempotencyKey": "h-1",
        },
    )
    assert held["authorizeRedemption"]["member"] == {"balance": 250, "heldPoints": 150}
    captured = run(
        at_airline,
        CAPTURE,
        input={
            "holdId": held["authorizeRedemption"]["hold"]["id"],
            "points": 120,
            "idempotencyKey": "c-1",
        },
    )["captureRedemption"]
    assert captured["member"] == {"balance": 280, "heldPoints": 0}

    # The grocer refunds part of the purchase; the airline cannot touch the grocer's earn.
    refund = {
        "transactionId": earned["transaction"]["id"],
        "points": 80,
        "reason": "returned item",
        "idempotencyKey": "refund-1",
    }
    not_theirs = run(at_airline, REVERSE, input=refund)["reverseTransaction"]
    assert not_theirs["errors"] == [{"code": "NOT_FOUND"}]
    reversed_ = run(at_grocer, REVERSE, input=refund)["reverseTransaction"]
    assert reversed_["member"] == {"balance": 200}
    assert run(at_grocer, REVERSE, input=refund)["reverseTransaction"] == reversed_

    # The member sees the whole story; each partner only its part.
    me = run(as_member, ME)["me"]
    assert (me["balance"], me["heldPoints"], me["lifetimeEarned"]) == (200, 0, 420)
    assert [(e["node"]["kind"], e["node"]["points"]) for e in me["transactions"]["edges"]] == [
        ("REVERSAL", -80),
        ("BURN", -120),
        ("BURN", -100),
        ("EARN", 500),
    ]
    airline_view = run(
        at_airline,
        """query($n: String!) { member(memberNumber: $n) {
        transactions(first: 10) { totalCount } } }""",
        n=number,
    )
    assert airline_view["member"]["transactions"]["totalCount"] == 2

    # Finance: a staff token from the command reads the liability; a partner cannot.
    out = io.StringIO()
    call_command("create_staff_token", "--username", "fiona", stdout=out)
    as_finance = client_for(live_server, out.getvalue().strip().splitlines()[-1])
    liability = run(as_finance, "{ liability { outstandingPoints } }")["liability"]
    assert liability == {"outstandingPoints": 200}
    with pytest.raises(TransportQueryError) as refused:
        run(at_grocer, "{ liability { outstandingPoints } }")
    assert refused.value.errors[0]["extensions"]["code"] == "PERMISSION_DENIED"

    assert ledger_check().ok
