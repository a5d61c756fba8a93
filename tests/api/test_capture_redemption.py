"""captureRedemption: burn all or part of one of your own holds (burn scope)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from coalition.models import RedemptionHold
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

CAPTURE = """
mutation Capture($input: CaptureRedemptionInput!) {
  captureRedemption(input: $input) {
    transaction { id kind points }
    discount { amount currency }
    member { balance heldPoints }
    errors { field code message }
  }
}"""


def capture_input(hold, **overrides):
    return hold_input(hold, "capture-1", **overrides)


@pytest.mark.django_db
def test_capturing_a_hold_burns_its_points(api, brand, hold):
    payload = api.mutate("captureRedemption", CAPTURE, capture_input(hold), token=brand.key)

    assert payload["errors"] == []
    assert payload["transaction"]["kind"] == "BURN"
    assert payload["transaction"]["points"] == -400
    assert payload["discount"] == {"amount": "3.20", "currency": "USD"}
    assert payload["member"] == {"balance": 600, "heldPoints": 0}


@pytest.mark.django_db
def test_capturing_less_releases_the_rest(api, brand, hold):
    payload = api.mutate(
        "captureRedemption", CAPTURE, capture_input(hold, points=150), token=brand.key
    )

    assert payload["transaction"]["points"] == -150
    assert payload["member"] == {"balance": 850, "heldPoints": 0}
    hold.refresh_from_db()
    assert (hold.status, hold.captured_points) == ("captured", 150)


@pytest.mark.django_db
def test_a_retry_returns_the_first_capture(api, brand, hold):
    first = api.mutate("captureRedemption", CAPTURE, capture_input(hold), token=brand.key)
    before = everything()

    again = api.mutate("captureRedemption", CAPTURE, capture_input(hold), token=brand.key)

    assert again == first
    assert everything() == before


@pytest.mark.django_db
def test_a_captured_hold_cannot_be_captured_again(api, brand, hold):
    api.mutate("captureRedemption", CAPTURE, capture_input(hold), token=brand.key)
    before = everything()

    payload = api.mutate(
        "captureRedemption", CAPTURE, capture_input(hold, idempotencyKey="c2"), token=brand.key
    )

    assert codes(payload) == [("HOLD_NOT_ACTIVE", "input.holdId")]
    assert everything() == before


@pytest.mark.django_db
def test_a_voided_or_expired_hold_is_not_active(api, brand, shopper, hold):
    factories.void(hold)
    expired = factories.hold(shopper, brand.partner, 100)
    RedemptionHold.objects.filter(pk=expired.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    before = everything()

    voided = api.mutate("captureRedemption", CAPTURE, capture_input(hold), token=brand.key)
    late = api.mutate("captureRedemption", CAPTURE, capture_input(expired), token=brand.key)

    assert codes(voided) == [("HOLD_NOT_ACTIVE", "input.holdId")]
    assert codes(late) == [("HOLD_NOT_ACTIVE", "input.holdId")]
    assert everything() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"points": 401}, ("INVALID", "input.points")),
        ({"points": 0}, ("INVALID", "input.points")),
        ({"holdId": "garbage"}, ("NOT_FOUND", "input.holdId")),
        ({"holdId": gid("RedemptionHold", 999999)}, ("NOT_FOUND", "input.holdId")),
        ({"holdId": gid("PointsTransaction", 1)}, ("NOT_FOUND", "input.holdId")),
        ({"idempotencyKey": ""}, ("INVALID", "input.idempotencyKey")),
    ],
)
def test_refusals_name_the_input_at_fault(api, brand, hold, overrides, expected):
    before = everything()

    payload = api.mutate(
        "captureRedemption", CAPTURE, capture_input(hold, **overrides), token=brand.key
    )

    assert codes(payload) == [expected]
    assert everything() == before


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
def test_permission_matrix(api, callers, caller, hold):
    """Only the partner that took the hold captures it; to another partner it does not
    exist (NOT_FOUND, like a wrong id)."""
    assert_only_the_holds_partner(
        api, callers, caller, "captureRedemption", CAPTURE, capture_input(hold)
    )


@pytest.mark.django_db
def test_a_key_without_the_burn_scope_is_refused(api, brand, hold):
    assert_burn_scope_required(api, brand, "captureRedemption", CAPTURE, capture_input(hold))
