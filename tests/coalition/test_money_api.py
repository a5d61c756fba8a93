"""An amount with more digits than decimal arithmetic holds, sent by a partner: refused as
INVALID on its own field (a purchase's amount, a line item's unit price), alone in a batch or
a file, with nothing written; never an internal error."""

import csv
import io

import pytest
from django.core.management import call_command

from coalition.money import MAX_INTEGER_DIGITS
from tests import factories
from tests.api.conftest import Api, codes, everything
from tests.api.test_record_purchases import batch_input, purchase

HUGE = "99999999999999999999999999.999"
TOO_LARGE = f"too large: at most {MAX_INTEGER_DIGITS} digits before the point"

RECORD = """
mutation Record($input: RecordPurchaseInput!) {
  recordPurchase(input: $input) {
    pointsAwarded
    transaction { id }
    errors { field code message }
  }
}"""

RECORD_MANY = """
mutation RecordMany($input: RecordPurchasesInput!) {
  recordPurchases(input: $input) {
    results { index pointsAwarded transaction { id } errors { field code message } }
    errors { field code message }
  }
}"""


@pytest.fixture
def api(client):
    return Api(client)


@pytest.fixture
def brand(db, programme):
    partner, key = factories.onboarded_partner()
    return partner, key


@pytest.fixture
def shopper(db, programme):
    return factories.member()


@pytest.mark.django_db
@pytest.mark.parametrize("amount", [HUGE, f"-{HUGE}"])
def test_a_huge_amount_is_refused_as_invalid_and_writes_nothing(api, brand, shopper, amount):
    # Given a partner and a member
    partner, key = brand
    before = everything()

    # When the partner records a purchase of an amount beyond any column
    response = api(RECORD, {"input": purchase(shopper, 1, amount=amount)}, token=key)

    # Then it is refused on the amount, as any bad amount is, and nothing changed
    payload = response.payload("recordPurchase")
    assert codes(payload) == [("INVALID", "input.amount")]
    assert payload["transaction"] is None
    assert everything() == before


@pytest.mark.django_db
def test_a_huge_unit_price_is_refused_on_its_line_item(api, brand, shopper):
    partner, key = brand
    items = [
        {"sku": "A", "category": "food", "quantity": 1, "unitPrice": "42.50"},
        {"sku": "B", "category": "food", "quantity": 1, "unitPrice": HUGE},
    ]
    before = everything()

    response = api(RECORD, {"input": purchase(shopper, 1, lineItems=items)}, token=key)

    payload = response.payload("recordPurchase")
    assert codes(payload) == [("INVALID", "input.lineItems.1.unitPrice")]
    assert payload["errors"][0]["message"] == TOO_LARGE
    assert everything() == before


@pytest.mark.django_db
def test_in_a_batch_only_the_huge_purchase_is_refused(api, brand, shopper):
    # Given a batch of three purchases, the second of a huge amount, the third with a huge
    # unit price
    partner, key = brand
    item = {"sku": "B", "category": "food", "quantity": 1, "unitPrice": HUGE}
    purchases = [
        purchase(shopper, 1),
        purchase(shopper, 2, amount=HUGE),
        purchase(shopper, 3, amount="10.00", lineItems=[item]),
        purchase(shopper, 4, amount="10.00"),
    ]

    # When it is recorded
    response = api(RECORD_MANY, {"input": batch_input(purchases)}, token=key)

    # Then the batch itself succeeds; the bad purchases alone are refused, on their fields
    payload = response.payload("recordPurchases")
    assert payload["errors"] == []
    results = payload["results"]
    assert [r["pointsAwarded"] for r in results] == [42, 0, 0, 10]
    assert codes(results[0]) == [] and codes(results[3]) == []
    assert codes(results[1]) == [("INVALID", "input.purchases.1.amount")]
    assert codes(results[2]) == [("INVALID", "input.purchases.2.lineItems.0.unitPrice")]
    assert results[1]["transaction"] is None and results[2]["transaction"] is None
    assert factories.wallet(shopper).balance == 52


@pytest.mark.django_db
def test_in_a_purchase_file_only_the_huge_row_is_refused(tmp_path, brand, shopper):
    # Given an end-of-day file whose second row has a huge amount
    partner, _ = brand
    path = tmp_path / "eod.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["idempotency_key", "member_number", "amount", "currency", "reference"])
        writer.writerow(["f-1", shopper.member_number, "12.00", "USD", "r1"])
        writer.writerow(["f-2", shopper.member_number, HUGE, "USD", "r2"])
        writer.writerow(["f-3", shopper.member_number, "5.00", "USD", "r3"])

    # When it is imported
    call_command(
        "import_purchases", partner.code, str(path), "--result", str(tmp_path / "result.csv"),
        "--sync", stdout=io.StringIO(),
    )  # fmt: skip

    # Then that row alone is rejected, on its amount
    with (tmp_path / "result.csv").open(newline="") as handle:
        result = list(csv.DictReader(handle))
    assert [(r["row"], r["status"], r["error_code"], r["error_field"]) for r in result] == [
        ("1", "accepted", "", ""),
        ("2", "rejected", "INVALID", "amount"),
        ("3", "accepted", "", ""),
    ]
    assert factories.wallet(shopper).balance == 17
