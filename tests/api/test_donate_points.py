"""donatePoints: a member gives points to a verified charity (charity.services)."""

import pytest

from charity.models import Charity, Donation
from tests import factories
from tests.api.conftest import CALLERS, everything, gid, token_for

DONATE = """
mutation Donate($input: DonatePointsInput!) {
  donatePoints(input: $input) {
    donation { id points value { amount currency } matchedPoints receiptNumber createdAt
               refunded charity { name totalDonatedPoints } }
    member { balance }
    errors { field code message }
  }
}"""


def donate_input(charity, **overrides):
    values = {"charityId": gid("Charity", charity.pk), "points": 200, "idempotencyKey": "gift-1"}
    values.update(overrides)
    return values


def codes(payload):
    return [(error["code"], error["field"]) for error in payload["errors"]]


@pytest.mark.django_db
def test_a_member_donates(api, shopper, charity):
    payload = api.mutate("donatePoints", DONATE, donate_input(charity), token=token_for(shopper))

    assert payload["errors"] == []
    donation = Donation.objects.get()
    assert payload["donation"]["id"] == gid("Donation", donation.pk)
    assert payload["donation"]["points"] == 200
    # At the programme's donation price, 0.01 per point.
    assert payload["donation"]["value"] == {"amount": "2.00", "currency": "USD"}
    assert payload["donation"]["receiptNumber"] == donation.receipt_number
    assert payload["donation"]["charity"] == {"name": charity.name, "totalDonatedPoints": 200}
    assert payload["member"] == {"balance": 800}


@pytest.mark.django_db
def test_a_retry_returns_the_first_donation(api, shopper, charity):
    token = token_for(shopper)
    first = api.mutate("donatePoints", DONATE, donate_input(charity), token=token)
    before = everything()

    again = api.mutate("donatePoints", DONATE, donate_input(charity), token=token)

    assert again == first
    assert everything() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"points": 1001}, ("INSUFFICIENT_POINTS", "input.points")),
        ({"points": 0}, ("INVALID", "input.points")),
        ({"charityId": "garbage"}, ("NOT_FOUND", "input.charityId")),
        ({"charityId": gid("Partner", 1)}, ("NOT_FOUND", "input.charityId")),
        ({"idempotencyKey": ""}, ("INVALID", "input.idempotencyKey")),
    ],
)
def test_refusals_name_the_input_at_fault(api, shopper, charity, overrides, expected):
    before = everything()

    payload = api.mutate(
        "donatePoints", DONATE, donate_input(charity, **overrides), token=token_for(shopper)
    )

    assert codes(payload) == [expected]
    assert payload["donation"] is None
    assert everything() == before


@pytest.mark.django_db
def test_an_unverified_charity_is_not_found(api, shopper):
    pending = factories.CharityFactory(status=Charity.Status.PENDING)
    before = everything()

    payload = api.mutate("donatePoints", DONATE, donate_input(pending), token=token_for(shopper))

    assert codes(payload) == [("NOT_FOUND", "input.charityId")]
    assert everything() == before


@pytest.mark.django_db
def test_below_the_programme_minimum_is_invalid(api, shopper, charity, programme):
    programme.min_donation_points = 500
    programme.save()
    before = everything()

    payload = api.mutate("donatePoints", DONATE, donate_input(charity), token=token_for(shopper))

    assert codes(payload) == [("INVALID", "input.points")]
    assert everything() == before


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
def test_permission_matrix(api, callers, caller, charity):
    before = everything()

    payload = api.mutate("donatePoints", DONATE, donate_input(charity), token=callers[caller])

    if caller == "member":
        assert payload["errors"] == []
    elif caller == "other_member":
        assert codes(payload) == [("INSUFFICIENT_POINTS", "input.points")]
        assert everything() == before
    else:
        assert codes(payload) == [("PERMISSION_DENIED", None)]
        assert everything() == before
