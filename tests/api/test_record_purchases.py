"""recordPurchases: a partner key with the earn scope records up to 1,000 purchases at once;
each purchase succeeds or fails on its own, with recordPurchase's rules and codes."""

import pytest
from django.test import Client

from coalition.models import IdempotencyRecord, LedgerTransaction
from tests import factories
from tests.api.conftest import CALLERS, Api, codes, everything, key_for

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

    assert codes(payload) == [("LIMIT_EXCEEDED", "input.purchases")]
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


# --------------------------------------------------------------------------- the batch's key


def record(api, purchases, token, key="batch-1"):
    return api.mutate("recordPurchases", RECORD_MANY, batch_input(purchases, key), token=token)


@pytest.mark.django_db
def test_the_same_batch_and_key_again_returns_the_first_outcomes_and_writes_nothing(
    api, brand, shopper
):
    # Given a batch of an earn, a purchase that earns nothing and a refused purchase
    purchases = [
        purchase(shopper, 1),
        purchase(shopper, 2, amount="0.50"),
        purchase(shopper, 3, memberNumber="6337000000000000"),
    ]
    first = record(api, purchases, brand.key)
    transactions = LedgerTransaction.objects.count()
    before = everything()

    # When it is sent again with its key
    again = record(api, purchases, brand.key)

    # Then every purchase's outcome is the first one, refusal included, and nothing is added
    assert again == first
    assert first["results"][0]["pointsAwarded"] == 42
    assert first["results"][1]["pointsAwarded"] == 0
    assert codes(first["results"][2]) == [("NOT_FOUND", "input.purchases.2.memberNumber")]
    assert LedgerTransaction.objects.count() == transactions
    assert everything() == before


@pytest.mark.django_db
def test_a_purchase_refused_the_first_time_is_not_recorded_by_a_replay(api, brand, shopper):
    # Given a batch whose purchase was refused for an unknown store, which exists since
    purchases = [purchase(shopper, 1), purchase(shopper, 2, storeCode="north-1")]
    first = record(api, purchases, brand.key)
    assert codes(first["results"][1]) == [("NOT_FOUND", "input.purchases.1.storeCode")]
    brand.partner.stores.create(code="north-1")
    before = everything()

    # When the batch is sent again with its key
    again = record(api, purchases, brand.key)

    # Then the first purchase replays, and the second stays refused: nothing is written
    assert again["results"][0] == first["results"][0]
    assert again["results"][1]["transaction"] is None
    assert codes(again["results"][1]) == [("INVALID_STATE", "input.purchases.1")]
    assert everything() == before


@pytest.mark.django_db
def test_the_same_key_with_other_purchases_is_a_conflict_and_writes_nothing(api, brand, shopper):
    # Given a batch recorded under "batch-1"
    record(api, [purchase(shopper, 1)], brand.key)
    before = everything()

    # When "batch-1" comes again with other purchases (new keys, that would otherwise earn)
    payload = record(api, [purchase(shopper, 1), purchase(shopper, 2)], brand.key)

    # Then the batch is refused as a whole, as a single write's reused key is
    assert codes(payload) == [("IDEMPOTENCY_CONFLICT", "input.idempotencyKey")]
    assert payload["results"] == []
    assert everything() == before


@pytest.mark.django_db
def test_a_batch_key_is_a_key_like_any_other_of_the_partner(api, brand, shopper):
    # Given a partner that enrolled a member under the key "k-1"
    api.mutate(
        "enrollMember",
        "mutation($input: EnrollMemberInput!) { enrollMember(input: $input) { errors { code } } }",
        {"email": "new@example.com", "displayName": "New", "idempotencyKey": "k-1"},
        token=brand.key,
    )
    before = everything()

    # When it sends a batch under the same key
    payload = record(api, [purchase(shopper, 1)], brand.key, key="k-1")

    # Then it is the key of another request
    assert codes(payload) == [("IDEMPOTENCY_CONFLICT", "input.idempotencyKey")]
    assert everything() == before


@pytest.mark.django_db
def test_another_partners_same_key_is_its_own_batch(api, brand, other_brand, shopper):
    # Given a batch recorded by one partner
    purchases = [purchase(shopper, 1), purchase(shopper, 2, amount="10.00")]
    mine = record(api, purchases, brand.key)
    start = factories.wallet(shopper).balance

    # When another partner sends the same batch under the same keys
    theirs = record(api, purchases, other_brand.key)

    # Then it is recorded for that partner, with transactions of its own
    assert [r["errors"] for r in theirs["results"]] == [[], []]
    assert [r["pointsAwarded"] for r in theirs["results"]] == [42, 10]
    mine_ids = {r["transaction"]["id"] for r in mine["results"]}
    assert mine_ids.isdisjoint(r["transaction"]["id"] for r in theirs["results"])
    assert factories.wallet(shopper).balance == start + 52
    assert IdempotencyRecord.objects.filter(idempotency_key="batch-1").count() == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_the_same_key_record_the_batch_once(brand, programme):
    # Given a batch of 50 purchases by 10 members
    members = [factories.member() for _ in range(10)]
    purchases = [purchase(members[n % 10], n) for n in range(50)]

    # When 4 requests send it with the same key at once, each on its own connection
    def send(index):
        return record(Api(Client()), purchases, brand.key)

    answers = factories.run_concurrently(4, send)

    # Then each answer is the same, and the ledger holds one batch's worth of earns
    assert [status for status, _ in answers] == ["ok"] * 4, answers
    first = answers[0][1]
    assert all(answer == first for _, answer in answers)
    assert all(result["errors"] == [] for result in first["results"])
    earns = LedgerTransaction.objects.filter(kind="earn", partner=brand.partner)
    assert earns.count() == 50
    assert sum(factories.wallet(m).balance for m in members) == 50 * 42
    assert IdempotencyRecord.objects.filter(idempotency_key="batch-1").count() == 1


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
        assert codes(payload) == [("PERMISSION_DENIED", None)]
        assert payload["results"] == []
        assert everything() == before


@pytest.mark.django_db
def test_a_key_without_the_earn_scope_is_refused(api, brand, shopper):
    key = key_for(brand.partner, ("burn", "read"))
    before = everything()

    payload = api.mutate(
        "recordPurchases", RECORD_MANY, batch_input([purchase(shopper, 1)]), token=key
    )

    assert codes(payload) == [("PERMISSION_DENIED", None)]
    assert everything() == before
