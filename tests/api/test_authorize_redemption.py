"""authorizeRedemption: reserve points at the till (burn scope)."""

import pytest

from coalition.models import RedemptionHold
from tests.api.conftest import CALLERS, assert_burn_scope_required, codes, everything, gid

AUTHORIZE = """
mutation Authorize($input: AuthorizeRedemptionInput!) {
  authorizeRedemption(input: $input) {
    hold { id points status expiresAt capturedPoints reference }
    member { balance heldPoints walletBalance }
    errors { field code message }
  }
}"""


def authorize_input(member, **overrides):
    values = {
        "memberNumber": member.member_number,
        "points": 400,
        "reference": "basket-9",
        "idempotencyKey": "hold-1",
    }
    values.update(overrides)
    return values


@pytest.mark.django_db
def test_a_hold_reserves_points(api, brand, shopper):
    payload = api.mutate(
        "authorizeRedemption", AUTHORIZE, authorize_input(shopper), token=brand.key
    )

    assert payload["errors"] == []
    hold = RedemptionHold.objects.get()
    assert payload["hold"]["id"] == gid("RedemptionHold", hold.pk)
    assert payload["hold"]["points"] == 400
    assert payload["hold"]["status"] == "ACTIVE"
    assert payload["hold"]["capturedPoints"] == 0
    assert payload["hold"]["reference"] == "basket-9"
    assert payload["member"] == {"balance": 600, "heldPoints": 400, "walletBalance": 1000}


@pytest.mark.django_db
def test_a_retry_returns_the_first_hold(api, brand, shopper):
    first = api.mutate("authorizeRedemption", AUTHORIZE, authorize_input(shopper), token=brand.key)
    before = everything()

    again = api.mutate("authorizeRedemption", AUTHORIZE, authorize_input(shopper), token=brand.key)

    assert again == first
    assert everything() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"points": 1001}, ("INSUFFICIENT_POINTS", "input.points")),
        ({"points": 0}, ("INVALID", "input.points")),
        ({"points": 20_000_000}, ("LIMIT_EXCEEDED", "input.points")),
        ({"memberNumber": "6337000000000000"}, ("NOT_FOUND", "input.memberNumber")),
        ({"reference": ""}, ("INVALID", "input.reference")),
        ({"idempotencyKey": ""}, ("INVALID", "input.idempotencyKey")),
    ],
)
def test_refusals_name_the_input_at_fault(api, brand, shopper, overrides, expected):
    before = everything()

    payload = api.mutate(
        "authorizeRedemption", AUTHORIZE, authorize_input(shopper, **overrides), token=brand.key
    )

    assert codes(payload) == [expected]
    assert payload["hold"] is None
    assert everything() == before


@pytest.mark.django_db
def test_the_same_key_for_other_points_is_a_conflict(api, brand, shopper):
    api.mutate("authorizeRedemption", AUTHORIZE, authorize_input(shopper), token=brand.key)
    before = everything()

    payload = api.mutate(
        "authorizeRedemption", AUTHORIZE, authorize_input(shopper, points=10), token=brand.key
    )

    assert codes(payload) == [("IDEMPOTENCY_CONFLICT", "input.idempotencyKey")]
    assert everything() == before


@pytest.mark.django_db
def test_a_closed_member_cannot_hold(api, brand, shopper):
    from coalition.services import member_set_status

    member_set_status(member=shopper, status="closed")
    before = everything()

    payload = api.mutate(
        "authorizeRedemption", AUTHORIZE, authorize_input(shopper), token=brand.key
    )

    assert codes(payload) == [("MEMBER_NOT_ACTIVE", None)]
    assert everything() == before


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
def test_permission_matrix(api, callers, caller, shopper):
    before = everything()

    payload = api.mutate(
        "authorizeRedemption", AUTHORIZE, authorize_input(shopper), token=callers[caller]
    )

    if caller in ("partner", "other_partner"):
        assert payload["errors"] == []
    else:
        assert codes(payload) == [("PERMISSION_DENIED", None)]
        assert everything() == before


@pytest.mark.django_db
def test_a_key_without_the_burn_scope_is_refused(api, brand, shopper):
    assert_burn_scope_required(
        api, brand, "authorizeRedemption", AUTHORIZE, authorize_input(shopper)
    )
