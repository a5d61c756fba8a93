"""voidRedemption: release one of your own holds (burn scope)."""

import pytest

from tests import factories
from tests.api.conftest import CALLERS, everything, gid, key_for

VOID = """
mutation Void($input: VoidRedemptionInput!) {
  voidRedemption(input: $input) {
    hold { id status points }
    member { balance heldPoints }
    errors { field code message }
  }
}"""


@pytest.fixture
def hold(shopper, brand):
    return factories.hold(shopper, brand.partner, 400)


def void_input(hold, **overrides):
    values = {"holdId": gid("RedemptionHold", hold.pk), "idempotencyKey": "void-1"}
    values.update(overrides)
    return values


def codes(payload):
    return [(error["code"], error["field"]) for error in payload["errors"]]


@pytest.mark.django_db
def test_voiding_releases_the_points(api, brand, hold):
    payload = api.mutate("voidRedemption", VOID, void_input(hold), token=brand.key)

    assert payload["errors"] == []
    assert payload["hold"]["status"] == "VOIDED"
    assert payload["member"] == {"balance": 1000, "heldPoints": 0}


@pytest.mark.django_db
def test_a_retry_returns_the_voided_hold(api, brand, hold):
    first = api.mutate("voidRedemption", VOID, void_input(hold), token=brand.key)
    before = everything()

    again = api.mutate("voidRedemption", VOID, void_input(hold), token=brand.key)

    assert again == first
    assert everything() == before


@pytest.mark.django_db
def test_a_captured_hold_cannot_be_voided(api, brand, hold):
    factories.capture(hold)
    before = everything()

    payload = api.mutate("voidRedemption", VOID, void_input(hold), token=brand.key)

    assert codes(payload) == [("HOLD_NOT_ACTIVE", "input.holdId")]
    assert everything() == before


@pytest.mark.django_db
def test_the_same_key_for_another_hold_is_a_conflict(api, brand, shopper, hold):
    api.mutate("voidRedemption", VOID, void_input(hold), token=brand.key)
    second = factories.hold(shopper, brand.partner, 100)
    before = everything()

    payload = api.mutate("voidRedemption", VOID, void_input(second), token=brand.key)

    assert codes(payload) == [("IDEMPOTENCY_CONFLICT", "input.idempotencyKey")]
    assert everything() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    "hold_id", ["", "bm9wZQ==", gid("RedemptionHold", 999999), gid("Member", 1)]
)
def test_unknown_holds_are_not_found(api, brand, hold, hold_id):
    before = everything()

    payload = api.mutate("voidRedemption", VOID, void_input(hold, holdId=hold_id), token=brand.key)

    assert codes(payload) == [("NOT_FOUND", "input.holdId")]
    assert everything() == before


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
def test_permission_matrix(api, callers, caller, hold):
    before = everything()

    payload = api.mutate("voidRedemption", VOID, void_input(hold), token=callers[caller])

    if caller == "partner":
        assert payload["errors"] == []
    elif caller == "other_partner":
        assert codes(payload) == [("NOT_FOUND", "input.holdId")]
        assert everything() == before
    else:
        assert codes(payload) == [("PERMISSION_DENIED", None)]
        assert everything() == before


@pytest.mark.django_db
def test_a_key_without_the_burn_scope_is_refused(api, brand, hold):
    key = key_for(brand.partner, ("earn", "read"))
    before = everything()

    payload = api.mutate("voidRedemption", VOID, void_input(hold), token=key)

    assert codes(payload) == [("PERMISSION_DENIED", None)]
    assert everything() == before
