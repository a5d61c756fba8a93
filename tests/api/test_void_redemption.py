"""voidRedemption: release one of your own holds (burn scope)."""

import pytest

from tests import factories
from tests.api.conftest import (
    CALLERS,
    assert_burn_scope_required,
    assert_only_the_holds_partner,
    codes,
    everything,
    gid,
    hold_input,
)

VOID = """
mutation Void($input: VoidRedemptionInput!) {
  voidRedemption(input: $input) {
    hold { id status points }
    member { balance heldPoints }
    errors { field code message }
  }
}"""


def void_input(hold, **overrides):
    return hold_input(hold, "void-1", **overrides)


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
    assert_only_the_holds_partner(api, callers, caller, "voidRedemption", VOID, void_input(hold))


@pytest.mark.django_db
def test_a_key_without_the_burn_scope_is_refused(api, brand, hold):
    assert_burn_scope_required(api, brand, "voidRedemption", VOID, void_input(hold))
