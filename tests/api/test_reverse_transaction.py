"""reverseTransaction: refund one of your own earns or redemptions, in full or in part.
Reversing needs the scope of the original: earn for an earn, burn for a redemption."""

import pytest

from tests import factories
from tests.api.conftest import CALLERS, everything, gid, key_for

REVERSE = """
mutation Reverse($input: ReverseTransactionInput!) {
  reverseTransaction(input: $input) {
    transaction { id kind points reversalOf { id kind } partner { code } }
    member { balance walletBalance }
    errors { field code message }
  }
}"""


@pytest.fixture
def earn(shopper):
    return shopper.transactions.get(kind="earn")


def reverse_input(txn, **overrides):
    values = {"transactionId": gid("PointsTransaction", txn.pk), "idempotencyKey": "refund-1"}
    values.update(overrides)
    return values


def codes(payload):
    return [(error["code"], error["field"]) for error in payload["errors"]]


@pytest.mark.django_db
def test_an_earn_is_reversed_in_full(api, brand, earn):
    payload = api.mutate("reverseTransaction", REVERSE, reverse_input(earn), token=brand.key)

    assert payload["errors"] == []
    assert payload["transaction"]["kind"] == "REVERSAL"
    assert payload["transaction"]["points"] == -1000
    assert payload["transaction"]["reversalOf"] == {
        "id": gid("PointsTransaction", earn.pk),
        "kind": "EARN",
    }
    assert payload["member"] == {"balance": 0, "walletBalance": 0}


@pytest.mark.django_db
def test_a_partial_reversal_then_the_rest(api, brand, earn):
    first = api.mutate(
        "reverseTransaction",
        REVERSE,
        reverse_input(earn, points=300, reason="one item"),
        token=brand.key,
    )
    rest = api.mutate(
        "reverseTransaction",
        REVERSE,
        reverse_input(earn, idempotencyKey="refund-2"),
        token=brand.key,
    )

    assert first["transaction"]["points"] == -300
    assert rest["transaction"]["points"] == -700
    assert rest["member"]["balance"] == 0


@pytest.mark.django_db
def test_a_redemption_is_reversed_with_the_burn_scope(api, brand, shopper):
    burn = factories.burn(shopper, brand.partner, 200)
    key = key_for(brand.partner, ("burn",))

    payload = api.mutate("reverseTransaction", REVERSE, reverse_input(burn), token=key)

    assert payload["errors"] == []
    assert payload["transaction"]["points"] == 200
    assert payload["member"]["balance"] == 1000


@pytest.mark.django_db
def test_reversing_spent_points_takes_the_wallet_negative(api, brand, other_brand, shopper, earn):
    factories.burn(shopper, other_brand.partner, 800)

    payload = api.mutate("reverseTransaction", REVERSE, reverse_input(earn), token=brand.key)

    assert payload["member"] == {"balance": 0, "walletBalance": -800}


@pytest.mark.django_db
def test_a_retry_returns_the_first_reversal(api, brand, earn):
    first = api.mutate("reverseTransaction", REVERSE, reverse_input(earn), token=brand.key)
    before = everything()

    again = api.mutate("reverseTransaction", REVERSE, reverse_input(earn), token=brand.key)

    assert again == first
    assert everything() == before


@pytest.mark.django_db
def test_a_fully_reversed_transaction_is_already_reversed(api, brand, earn):
    api.mutate("reverseTransaction", REVERSE, reverse_input(earn), token=brand.key)
    before = everything()

    payload = api.mutate(
        "reverseTransaction",
        REVERSE,
        reverse_input(earn, idempotencyKey="refund-2"),
        token=brand.key,
    )

    assert codes(payload) == [("ALREADY_REVERSED", "input.transactionId")]
    assert everything() == before


@pytest.mark.django_db
def test_a_reversal_cannot_be_reversed(api, brand, earn):
    reversal = factories.reverse(earn, 100)
    before = everything()

    payload = api.mutate("reverseTransaction", REVERSE, reverse_input(reversal), token=brand.key)

    assert codes(payload) == [("INVALID_STATE", "input.transactionId")]
    assert everything() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"points": 1001}, ("INVALID", "input.points")),
        ({"points": 0}, ("INVALID", "input.points")),
        ({"reason": "x" * 300}, ("INVALID", "input.reason")),
        ({"transactionId": "garbage"}, ("NOT_FOUND", "input.transactionId")),
        ({"transactionId": gid("RedemptionHold", 1)}, ("NOT_FOUND", "input.transactionId")),
        ({"transactionId": gid("PointsTransaction", 999999)}, ("NOT_FOUND", "input.transactionId")),
        ({"idempotencyKey": ""}, ("INVALID", "input.idempotencyKey")),
    ],
)
def test_refusals_name_the_input_at_fault(api, brand, earn, overrides, expected):
    before = everything()

    payload = api.mutate(
        "reverseTransaction", REVERSE, reverse_input(earn, **overrides), token=brand.key
    )

    assert codes(payload) == [expected]
    assert everything() == before


@pytest.mark.django_db
def test_the_same_key_for_other_points_is_a_conflict(api, brand, earn):
    api.mutate("reverseTransaction", REVERSE, reverse_input(earn, points=10), token=brand.key)
    before = everything()

    payload = api.mutate(
        "reverseTransaction", REVERSE, reverse_input(earn, points=20), token=brand.key
    )

    assert codes(payload) == [("IDEMPOTENCY_CONFLICT", "input.idempotencyKey")]
    assert everything() == before


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
def test_permission_matrix(api, callers, caller, earn):
    """Only the partner of the original reverses it; another partner cannot even learn
    that the transaction exists."""
    before = everything()

    payload = api.mutate("reverseTransaction", REVERSE, reverse_input(earn), token=callers[caller])

    if caller == "partner":
        assert payload["errors"] == []
    elif caller == "other_partner":
        assert codes(payload) == [("NOT_FOUND", "input.transactionId")]
        assert everything() == before
    else:
        assert codes(payload) == [("PERMISSION_DENIED", None)]
        assert everything() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "scopes"),
    [("earn", ("burn", "read")), ("burn", ("earn", "read")), ("earn", ("read",))],
)
def test_reversal_needs_the_scope_of_the_original(api, brand, shopper, earn, kind, scopes):
    original = earn if kind == "earn" else factories.burn(shopper, brand.partner, 100)
    key = key_for(brand.partner, scopes)
    before = everything()

    payload = api.mutate("reverseTransaction", REVERSE, reverse_input(original), token=key)

    assert codes(payload) == [("PERMISSION_DENIED", None)]
    assert everything() == before
