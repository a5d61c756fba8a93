"""The charity part of the GraphQL API: charities, donatePoints, Member.donations,
givingPreferences and updateGivingPreferences."""

import json

import pytest
from django.core.cache import cache
from graphql_relay import to_global_id

from charity.models import Charity, Donation
from tests import factories

pytestmark = pytest.mark.django_db

DONATE = """
mutation Donate($input: DonatePointsInput!) {
  donatePoints(input: $input) {
    donation { id points matchedPoints receiptNumber receiptUrl createdAt source
               value { amount currency } charity { name registrationNumber } }
    member { balance }
    errors { field code message }
  }
}
"""

GIVING = """
mutation Giving($input: UpdateGivingPreferencesInput!) {
  updateGivingPreferences(input: $input) {
    givingPreferences { roundUpPercent roundUpCharity { name } expiryCharity { name } }
    errors { field code message }
  }
}
"""


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def graphql(client):
    def call(query, variables=None, *, token=None):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
        response = client.post(
            "/graphql/",
            data=json.dumps({"query": query, "variables": variables or {}}),
            content_type="application/json",
            **headers,
        )
        body = json.loads(response.content)
        assert response.status_code == 200, body
        assert not body.get("errors"), body["errors"]
        return body["data"]

    return call


def _token(member) -> str:
    from api.core.auth import member_token_issue

    return member_token_issue(member)[0]


def _donate(graphql, member, charity, points, key="donate-1", token=None):
    variables = {
        "input": {
            "charityId": to_global_id("Charity", charity.pk),
            "points": points,
            "idempotencyKey": key,
        }
    }
    token = token if token is not None else _token(member)
    return graphql(DONATE, variables, token=token)["donatePoints"]


def test_donate_points(graphql, rich_member, charity, sponsor):
    factories.campaign(sponsor, charity=charity, ratio="1", cap_points=50)

    payload = _donate(graphql, rich_member, charity, 250)

    assert payload["errors"] == []
    donation = payload["donation"]
    assert donation["points"] == 250
    assert donation["matchedPoints"] == 50
    assert donation["receiptNumber"].startswith("CR-")
    assert donation["receiptUrl"] == f"/charity/receipts/{donation['receiptNumber']}/"
    assert donation["value"] == {"amount": "2.50", "currency": "USD"}
    assert donation["source"] == "member"
    assert donation["charity"]["registrationNumber"] == charity.registration_number
    assert payload["member"]["balance"] == 750

    # a retry returns the same donation
    again = _donate(graphql, rich_member, charity, 250)
    assert again["donation"]["id"] == donation["id"]
    assert Donation.objects.count() == 1


@pytest.mark.parametrize(
    ("setup", "points", "code", "field"),
    [
        ("suspended", 200, "INVALID_STATE", "charityId"),
        ("pending", 200, "NOT_FOUND", "charityId"),  # never shown to members
        ("unknown", 200, "NOT_FOUND", "charityId"),
        ("verified", 99, "INVALID", "points"),
        ("verified", 5000, "INSUFFICIENT_POINTS", "points"),
    ],
)
def test_donate_points_refusals_write_nothing(graphql, rich_member, setup, points, code, field):
    charity = factories.CharityFactory(
        status={"suspended": "suspended", "pending": "pending"}.get(setup, "verified")
    )
    if setup == "unknown":
        charity = Charity(pk=10**9)
    before = factories.charity_state()

    payload = _donate(graphql, rich_member, charity, points)

    assert payload["donation"] is None
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [(code, f"input.{field}")]
    assert factories.charity_state() == before


@pytest.mark.parametrize("caller", ["anonymous", "partner"])
def test_donate_points_needs_a_member_token(graphql, rich_member, charity, partner, caller):
    from partners.services import api_key_create

    token = "" if caller == "anonymous" else api_key_create(partner=partner, scopes=["earn"])[1]
    before = factories.charity_state()

    payload = _donate(graphql, rich_member, charity, 200, token=token)

    assert [e["code"] for e in payload["errors"]] == ["PERMISSION_DENIED"]
    assert factories.charity_state() == before


def test_charities_lists_verified_ones_filtered_with_totals(graphql, rich_member):
    health = factories.CharityFactory(name="A Health", cause="health", country="GB")
    factories.CharityFactory(name="B Arts", cause="arts")
    factories.CharityFactory(name="C Pending", cause="health", status="pending")
    factories.give(rich_member, health, 300)
    query = """query($cause: String, $country: String) {
      charities(first: 10, cause: $cause, country: $country) {
        totalCount edges { node { name cause country totalDonatedPoints } }
      }
    }"""

    everything = graphql(query)["charities"]
    health_gb = graphql(query, {"cause": "health", "country": "GB"})["charities"]

    assert everything["totalCount"] == 2
    assert [edge["node"]["name"] for edge in everything["edges"]] == ["A Health", "B Arts"]
    assert health_gb["edges"] == [
        {
            "node": {
                "name": "A Health",
                "cause": "health",
                "country": "GB",
                "totalDonatedPoints": 300,
            }
        }
    ]


def test_member_donations_are_the_members_own(graphql, rich_member, charity, partner):
    factories.give(rich_member, charity, 100)
    factories.give(rich_member, charity, 200)
    stranger = factories.member()
    query = """{ me { donations(first: 10) { totalCount edges { node {
        points receiptNumber paidToCharityAt settlementTransferId } } } } }"""

    mine = graphql(query, token=_token(rich_member))["me"]["donations"]
    theirs = graphql(query, token=_token(stranger))["me"]["donations"]

    assert mine["totalCount"] == 2
    assert [edge["node"]["points"] for edge in mine["edges"]] == [200, 100]
    assert mine["edges"][0]["node"]["paidToCharityAt"] is None
    assert theirs == {"totalCount": 0, "edges": []}


def test_update_giving_preferences(graphql, member, charity):
    token = _token(member)
    charity_id = to_global_id("Charity", charity.pk)

    chosen = graphql(
        GIVING,
        {
            "input": {
                "roundUpCharityId": charity_id,
                "roundUpPercent": 5,
                "expiryCharityId": charity_id,
            }
        },
        token=token,
    )["updateGivingPreferences"]
    assert chosen["errors"] == []
    assert chosen["givingPreferences"] == {
        "roundUpPercent": 5,
        "roundUpCharity": {"name": charity.name},
        "expiryCharity": {"name": charity.name},
    }

    switched_off = graphql(GIVING, {"input": {"roundUpCharityId": None}}, token=token)[
        "updateGivingPreferences"
    ]
    assert switched_off["givingPreferences"] == {
        "roundUpPercent": None,
        "roundUpCharity": None,
        "expiryCharity": {"name": charity.name},
    }
    read = graphql("{ givingPreferences { roundUpPercent expiryCharity { name } } }", token=token)
    assert read["givingPreferences"] == {
        "roundUpPercent": None,
        "expiryCharity": {"name": charity.name},
    }


@pytest.mark.parametrize("percent", [0, 101])
def test_a_round_up_share_outside_1_to_100_is_refused(graphql, member, charity, percent):
    before = factories.charity_state()

    payload = graphql(
        GIVING,
        {
            "input": {
                "roundUpCharityId": to_global_id("Charity", charity.pk),
                "roundUpPercent": percent,
            }
        },
        token=_token(member),
    )["updateGivingPreferences"]

    assert [(e["code"], e["field"]) for e in payload["errors"]] == [
        ("INVALID", "input.roundUpPercent")
    ]
    assert factories.charity_state() == before
