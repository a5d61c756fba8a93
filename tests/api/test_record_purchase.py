"""recordPurchase: a partner key with the earn scope records a purchase; the programme's
rules compute the points."""

import pytest

from coalition.models import LedgerTransaction
from tests import factories
from tests.api.conftest import CALLERS, everything, key_for

RECORD = """
mutation Record($input: RecordPurchaseInput!) {
  recordPurchase(input: $input) {
    pointsAwarded
    transaction {
      id kind points reference createdAt
      purchaseAmount { amount currency }
      partner { code }
      breakdown { kind label points fundedBy multiplier }
    }
    member { memberNumber balance }
    errors { field code message }
  }
}"""


def purchase_input(member, **overrides):
    values = {
        "memberNumber": member.member_number,
        "amount": "42.50",
        "currency": "USD",
        "reference": "receipt-1",
        "idempotencyKey": "purchase-1",
    }
    values.update(overrides)
    return values


def codes(payload):
    return [(error["code"], error["field"]) for error in payload["errors"]]


@pytest.mark.django_db
def test_a_purchase_earns_points_with_their_breakdown(api, brand, shopper):
    payload = api.mutate("recordPurchase", RECORD, purchase_input(shopper), token=brand.key)

    assert payload["errors"] == []
    assert payload["pointsAwarded"] == 42
    txn = payload["transaction"]
    assert txn["kind"] == "EARN"
    assert txn["points"] == 42
    assert txn["reference"] == "receipt-1"
    assert txn["purchaseAmount"] == {"amount": "42.50", "currency": "USD"}
    assert txn["partner"] == {"code": brand.partner.code}
    assert txn["breakdown"] == [
        {
            "kind": "base",
            "label": "42.50 × 1.0000",
            "points": 42,
            "fundedBy": "partner",
            "multiplier": None,
        }
    ]
    assert payload["member"] == {"memberNumber": shopper.member_number, "balance": 1042}


@pytest.mark.django_db
def test_line_items_in_excluded_categories_earn_nothing(api, brand, shopper):
    brand.partner.excluded_categories = ["gift-cards"]
    brand.partner.save()
    items = [
        {"sku": "A", "category": "food", "quantity": 2, "unitPrice": "10.00"},
        {"sku": "G", "category": "gift-cards", "quantity": 1, "unitPrice": "22.50"},
    ]

    payload = api.mutate(
        "recordPurchase", RECORD, purchase_input(shopper, lineItems=items), token=brand.key
    )

    assert payload["pointsAwarded"] == 20


@pytest.mark.django_db
def test_a_purchase_that_earns_nothing_has_no_transaction(api, brand, shopper):
    payload = api.mutate(
        "recordPurchase", RECORD, purchase_input(shopper, amount="0.50"), token=brand.key
    )

    assert payload["errors"] == []
    assert payload["pointsAwarded"] == 0
    assert payload["transaction"] is None
    assert payload["member"]["balance"] == 1000


@pytest.mark.django_db
def test_a_retry_with_the_same_key_returns_the_first_result(api, brand, shopper):
    first = api.mutate("recordPurchase", RECORD, purchase_input(shopper), token=brand.key)
    before = everything()

    again = api.mutate("recordPurchase", RECORD, purchase_input(shopper), token=brand.key)

    assert again == first
    assert everything() == before


@pytest.mark.django_db
def test_the_same_key_with_another_amount_is_a_conflict(api, brand, shopper):
    api.mutate("recordPurchase", RECORD, purchase_input(shopper), token=brand.key)
    before = everything()

    payload = api.mutate(
        "recordPurchase", RECORD, purchase_input(shopper, amount="43.00"), token=brand.key
    )

    assert codes(payload) == [("IDEMPOTENCY_CONFLICT", "input.idempotencyKey")]
    assert payload["pointsAwarded"] == 0
    assert everything() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"memberNumber": "6337000000000000"}, ("NOT_FOUND", "input.memberNumber")),
        ({"memberNumber": "not-a-number"}, ("NOT_FOUND", "input.memberNumber")),
        ({"currency": "EUR"}, ("CURRENCY_MISMATCH", "input.currency")),
        ({"amount": "12.345"}, ("INVALID", "input.amount")),
        ({"amount": "-5"}, ("INVALID", "input.amount")),
        ({"amount": "0"}, ("INVALID", "input.amount")),
        ({"reference": ""}, ("INVALID", "input.reference")),
        ({"reference": "x" * 256}, ("INVALID", "input.reference")),
        ({"idempotencyKey": ""}, ("INVALID", "input.idempotencyKey")),
        ({"storeCode": "NOPE"}, ("NOT_FOUND", "input.storeCode")),
        ({"occurredAt": "2999-01-01T00:00:00+00:00"}, ("INVALID", "input.occurredAt")),
        ({"occurredAt": "2001-01-01T00:00:00+00:00"}, ("INVALID", "input.occurredAt")),
        (
            {"lineItems": [{"sku": "A", "quantity": 1, "unitPrice": "1.00"}]},
            ("INVALID", "input.lineItems"),
        ),
        (
            {"amount": "1.00", "lineItems": [{"sku": "A", "quantity": 1, "unitPrice": "1.001"}]},
            ("INVALID", "input.lineItems.0.unitPrice"),
        ),
        (
            {"amount": "1.00", "lineItems": [{"sku": "A", "quantity": 0, "unitPrice": "1.00"}]},
            ("INVALID", "input.lineItems.0.quantity"),
        ),
        ({"amount": "20000000"}, ("LIMIT_EXCEEDED", None)),
    ],
)
def test_refusals_name_the_input_at_fault(api, brand, shopper, overrides, expected):
    before = everything()

    payload = api.mutate(
        "recordPurchase", RECORD, purchase_input(shopper, **overrides), token=brand.key
    )

    assert codes(payload) == [expected]
    assert payload["transaction"] is None
    assert everything() == before


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["suspended", "closed"])
def test_a_member_who_is_not_active_earns_nothing(api, brand, shopper, status):
    from coalition.services import member_set_status

    member_set_status(member=shopper, status=status)
    before = everything()

    payload = api.mutate("recordPurchase", RECORD, purchase_input(shopper), token=brand.key)

    assert codes(payload) == [("MEMBER_NOT_ACTIVE", None)]
    assert everything() == before


@pytest.mark.django_db
def test_a_float_amount_is_refused_before_anything_runs(api, brand, shopper):
    before = everything()

    response = api(RECORD, {"input": purchase_input(shopper, amount=42.5)}, token=brand.key)

    assert response.status == 400
    assert "sent as strings" in response.errors[0]["message"]
    assert everything() == before


@pytest.mark.django_db
def test_a_decimal_literal_in_the_query_stays_exact(api, brand, shopper):
    number = shopper.member_number
    query = f"""mutation {{ recordPurchase(input: {{memberNumber: "{number}", amount: 10.10,
      currency: "USD", reference: "r", idempotencyKey: "lit"}}) {{
      transaction {{ purchaseAmount {{ amount }} }} errors {{ code }} }} }}"""

    payload = api(query, token=brand.key).payload("recordPurchase")

    assert payload["transaction"]["purchaseAmount"] == {"amount": "10.10"}


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
def test_permission_matrix(api, callers, caller, shopper):
    before = everything()

    payload = api.mutate("recordPurchase", RECORD, purchase_input(shopper), token=callers[caller])

    if caller in ("partner", "other_partner"):
        assert payload["errors"] == []
        assert payload["pointsAwarded"] == 42
    else:
        assert codes(payload) == [("PERMISSION_DENIED", None)]
        assert everything() == before


@pytest.mark.django_db
def test_a_key_without_the_earn_scope_is_refused(api, brand, shopper):
    key = key_for(brand.partner, ("burn", "read"))
    before = everything()

    payload = api.mutate("recordPurchase", RECORD, purchase_input(shopper), token=key)

    assert codes(payload) == [("PERMISSION_DENIED", None)]
    assert everything() == before
    assert not LedgerTransaction.objects.filter(reference="receipt-1").exists()


@pytest.mark.django_db
def test_two_partners_may_use_the_same_idempotency_key(api, brand, other_brand, shopper):
    first = api.mutate("recordPurchase", RECORD, purchase_input(shopper), token=brand.key)
    second = api.mutate("recordPurchase", RECORD, purchase_input(shopper), token=other_brand.key)

    assert first["transaction"]["id"] != second["transaction"]["id"]
    assert second["member"]["balance"] == 1084
    assert factories.wallet(shopper).balance == 1084


@pytest.mark.django_db
def test_a_key_the_partner_used_for_a_hold_is_a_conflict(api, brand, shopper):
    from tests.api.test_authorize_redemption import AUTHORIZE, authorize_input

    # Given a hold the till authorised under "till-5"
    held = api.mutate(
        "authorizeRedemption",
        AUTHORIZE,
        authorize_input(shopper, idempotencyKey="till-5"),
        token=brand.key,
    )
    assert held["errors"] == []
    before = everything()

    # When the till records a purchase under the same key
    payload = api.mutate(
        "recordPurchase", RECORD, purchase_input(shopper, idempotencyKey="till-5"), token=brand.key
    )

    # Then it is a conflict on the key, and nothing is written
    assert codes(payload) == [("IDEMPOTENCY_CONFLICT", "input.idempotencyKey")]
    assert payload["transaction"] is None
    assert everything() == before
