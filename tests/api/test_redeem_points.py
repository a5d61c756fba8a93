"""redeemPoints: a partner key with the burn scope redeems points at the till, one step."""

import pytest

from tests import factories
from tests.api.conftest import CALLERS, everything, key_for

REDEEM = """
mutation Redeem($input: RedeemPointsInput!) {
  redeemPoints(input: $input) {
    transaction { id kind points partner { code } reference }
    discount { amount currency }
    member { balance heldPoints }
    errors { field code message }
  }
}"""


def redeem_input(member, **overrides):
    values = {
        "memberNumber": member.member_number,
        "points": 250,
        "reference": "till-7",
        "idempotencyKey": "redeem-1",
    }
    values.update(overrides)
    return values


def codes(payload):
    return [(error["code"], error["field"]) for error in payload["errors"]]


@pytest.mark.django_db
def test_points_earned_at_one_brand_are_redeemed_at_another(api, other_brand, shopper):
    payload = api.mutate("redeemPoints", REDEEM, redeem_input(shopper), token=other_brand.key)

    assert payload["errors"] == []
    assert payload["transaction"]["kind"] == "BURN"
    assert payload["transaction"]["points"] == -250
    assert payload["transaction"]["partner"] == {"code": other_brand.partner.code}
    # 250 points at the redemption price 0.0080.
    assert payload["discount"] == {"amount": "2.00", "currency": "USD"}
    assert payload["member"] == {"balance": 750, "heldPoints": 0}


@pytest.mark.django_db
def test_a_retry_with_the_same_key_returns_the_first_redemption(api, brand, shopper):
    first = api.mutate("redeemPoints", REDEEM, redeem_input(shopper), token=brand.key)
    before = everything()

    again = api.mutate("redeemPoints", REDEEM, redeem_input(shopper), token=brand.key)

    assert again == first
    assert everything() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"points": 1001}, ("INSUFFICIENT_POINTS", "input.points")),
        ({"points": 0}, ("INVALID", "input.points")),
        ({"points": -5}, ("INVALID", "input.points")),
        ({"points": 20_000_000}, ("LIMIT_EXCEEDED", "input.points")),
        ({"memberNumber": "6337000000000000"}, ("NOT_FOUND", "input.memberNumber")),
        ({"reference": ""}, ("INVALID", "input.reference")),
        ({"idempotencyKey": ""}, ("INVALID", "input.idempotencyKey")),
    ],
)
def test_refusals_name_the_input_at_fault(api, brand, shopper, overrides, expected):
    before = everything()

    payload = api.mutate(
        "redeemPoints", REDEEM, redeem_input(shopper, **overrides), token=brand.key
    )

    assert codes(payload) == [expected]
    assert payload["transaction"] is None and payload["discount"] is None
    assert everything() == before


@pytest.mark.django_db
def test_the_same_key_with_other_points_is_a_conflict(api, brand, shopper):
    api.mutate("redeemPoints", REDEEM, redeem_input(shopper), token=brand.key)
    before = everything()

    payload = api.mutate("redeemPoints", REDEEM, redeem_input(shopper, points=10), token=brand.key)

    assert codes(payload) == [("IDEMPOTENCY_CONFLICT", "input.idempotencyKey")]
    assert everything() == before


@pytest.mark.django_db
def test_the_daily_burn_limit_is_a_limit(api, brand, shopper, programme):
    programme.daily_burn_limit = 300
    programme.save()
    api.mutate("redeemPoints", REDEEM, redeem_input(shopper), token=brand.key)
    before = everything()

    payload = api.mutate(
        "redeemPoints", REDEEM, redeem_input(shopper, idempotencyKey="r2"), token=brand.key
    )

    assert codes(payload) == [("LIMIT_EXCEEDED", "input.points")]
    assert everything() == before


@pytest.mark.django_db
def test_a_suspended_member_cannot_redeem(api, brand, shopper):
    from coalition.services import member_set_status

    member_set_status(member=shopper, status="suspended")
    before = everything()

    payload = api.mutate("redeemPoints", REDEEM, redeem_input(shopper), token=brand.key)

    assert codes(payload) == [("MEMBER_NOT_ACTIVE", None)]
    assert everything() == before


@pytest.mark.django_db
def test_held_points_cannot_be_redeemed(api, brand, shopper):
    factories.hold(shopper, brand.partner, 900)
    before = everything()

    payload = api.mutate("redeemPoints", REDEEM, redeem_input(shopper), token=brand.key)

    assert codes(payload) == [("INSUFFICIENT_POINTS", "input.points")]
    assert everything() == before


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
def test_permission_matrix(api, callers, caller, shopper):
    before = everything()

    payload = api.mutate("redeemPoints", REDEEM, redeem_input(shopper), token=callers[caller])

    if caller in ("partner", "other_partner"):
        assert payload["errors"] == []
        assert payload["member"]["balance"] == 750
    else:
        assert codes(payload) == [("PERMISSION_DENIED", None)]
        assert everything() == before


@pytest.mark.django_db
def test_a_key_without_the_burn_scope_is_refused(api, brand, shopper):
    key = key_for(brand.partner, ("earn", "read"))
    before = everything()

    payload = api.mutate("redeemPoints", REDEEM, redeem_input(shopper), token=key)

    assert codes(payload) == [("PERMISSION_DENIED", None)]
    assert "burn scope" in payload["errors"][0]["message"]
    assert everything() == before
