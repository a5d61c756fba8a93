"""recordPurchases: a partner key with the earn scope records up to 1,000 purchases at once;
each purchase succeeds or fails on its own, with recordPurchase's rules and codes."""

import pytest

from coalition.models import LedgerTransaction
from tests import factories
from tests.api.conftest import CALLERS, everything, key_for

RECORD_MANY = """
mutation RecordMany($input: RecordPurchasesInput!) {
  recordPurchases(input: $input) {
    results {
      index
      pointsAwarded
      transaction { id kind points reference purchaseAmount { amount currency } }
      errors { field code message }
    }
    errors { field code message }
  }
}"""


def purchase(member, n, **overrides):
    values = {
        "memberNumber": member.member_number,
        "amount": "42.50",
        "currency": "USD",
        "reference": f"receipt-{n}",
        "idempotencyKey": f"purchase-{n}",
    }
    values.update(overrides)
    return values


def batch_input(purchases, key="batch-1"):
    return {"purchases": purchases, "idempotencyKey": key}


def codes(result):
    return [(error["code"], error["field"]) for error in result["errors"]]


@pytest.mark.django_db
def test_purchases_earn_points_each_with_its_transaction(api, brand, shopper):
    start = factories.wallet(shopper).balance

    payload = api.mutate(
        "recordPurchases",
        RECORD_MANY,
        batch_input([purchase(shopper, 1), purchase(shopper, 2, amount="10.00")]),
        token=brand.key,
    )

    assert payload["errors"] == []
    first, second = payload["results"]
    assert [first["index"], second["index"]] == [0, 1]
    assert first["errors"] == [] and second["errors"] == []
    assert first["pointsAwarded"] == 42 and second["pointsAwarded"] == 10
    assert first["transaction"]["kind"] == "EARN"
    assert first["transaction"]["reference"] == "receipt-1"
    assert first["transaction"]["purchaseAmount"] == {"amount": "42.50", "currency": "USD"}
    assert first["transaction"]["id"] != second["transaction"]["id"]
    assert factories.wallet(shopper).balance == start + 52


@pytest.mark.django_db
def test_a_bad_purchase_is_refused_alone_with_its_field_path(api, brand, shopper):
    start = factories.wallet(shopper).balance

    payload = api.mutate(
        "recordPurchases",
        RECORD_MANY,
        batch_input(
            [
                purchase(shopper, 1),
                purchase(shopper, 2, amount="12.345"),
                purchase(shopper, 3, memberNumber="6337000000000000"),
                purchase(shopper, 4, currency="EUR"),
            ]
        ),
        token=brand.key,
    )

    assert payload["errors"] == []
    results = payload["results"]
    assert results[0]["errors"] == [] and results[0]["pointsAwarded"] == 42
    assert codes(results[1]) == [("INVALID", "input.purchases.1.amount")]
    assert codes(results[2]) == [("NOT_FOUND", "input.purchases.2.memberNumber")]
    assert codes(results[3]) == [("CURRENCY_MISMATCH", "input.purchases.3.currency")]
    for refused in results[1:]:
        assert refused["transaction"] is None
        assert refused["pointsAwarded"] == 0
    assert factories.wallet(shopper).balance == start + 42
    assert LedgerTransaction.objects.filter(reference__in=["receipt-2", "receipt-3"]).count() == 0


@pytest.mark.django_db
def test_more_than_1000_purchases_are_refused_and_nothing_is_written(api, brand, shopper):
    before = everything()

    payload = api.mutate(
        "recordPurchases",
        RECORD_MANY,
        batch_input([purchase(shopper, n) for n in range(1001)]),
        token=brand.key,
    )

    assert [(e["code"], e["field"]) for e in payload["errors"]] == [
        ("LIMIT_EXCEEDED", "input.purchases")
    ]
    assert payload["results"] == []
    assert everything() == before


@pytest.mark.django_db
def test_sending_the_batch_again_replays_every_purchase(api, brand, shopper):
    purchases = [purchase(shopper, 1), purchase(shopper, 2)]
    first = api.mutate("recordPurchases", RECORD_MANY, batch_input(purchases), token=brand.key)
    before = everything()

    again = api.mutate("recordPurchases", RECORD_MANY, batch_input(purchases), token=brand.key)

    assert again == first
    assert everything() == before


@pytest.mark.django_db
def test_a_key_reused_with_another_amount_is_a_conflict_for_that_purchase(api, brand, shopper):
    api.mutate("recordPurchases", RECORD_MANY, batch_input([purchase(shopper, 1)]), token=brand.key)
    before = everything()

    payload = api.mutate(
        "recordPurchases",
        RECORD_MANY,
        batch_input([purchase(shopper, 1, amount="43.00")], key="batch-2"),
        token=brand.key,
    )

    assert codes(payload["results"][0]) == [
        ("IDEMPOTENCY_CONFLICT", "input.purchases.0.idempotencyKey")
    ]
    assert everything() == before


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
def test_permission_matrix(api, callers, caller, shopper):
    before = everything()

    payload = api.mutate(
        "recordPurchases", RECORD_MANY, batch_input([purchase(shopper, 1)]), token=callers[caller]
    )

    if caller in ("partner", "other_partner"):
        assert payload["errors"] == []
        assert payload["results"][0]["pointsAwarded"] == 42
    else:
        assert [(e["code"], e["field"]) for e in payload["errors"]] == [("PERMISSION_DENIED", None)]
        assert payload["results"] == []
        assert everything() == before


@pytest.mark.django_db
def test_a_key_without_the_earn_scope_is_refused(api, brand, shopper):
    key = key_for(brand.partner, ("burn", "read"))
    before = everything()

    payload = api.mutate(
        "recordPurchases", RECORD_MANY, batch_input([purchase(shopper, 1)]), token=key
    )

    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("PERMISSION_DENIED", None)]
    assert everything() == before
