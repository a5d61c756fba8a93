"""The faster Python paths of the purchase-file import give what the plain ones gave: COPY
text column by column, request fingerprints, members read as rows, the rule engine without
a member when the batch has answered the member conditions, and the collector's state."""

import gc
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from coalition.models import LedgerTransaction, Member
from coalition.services.batch import _copy_column, _copy_text
from coalition.services.idempotency import request_fingerprint
from partners.imports import _collector_paused
from partners.models import Promotion
from partners.services.batch import _member_rows
from partners.services.earning import PurchaseContext, compute_points, purchase_fingerprint
from tests import factories

NOW = datetime(2030, 3, 15, 12, 0, tzinfo=UTC)

COLUMNS = [
    [1, 2, 3],
    [7, 7, 7],
    [1, True, 3],
    [1, None, 3],
    ["a", "b\tc", "d\\e", "f\ng", "h\r", "é × ü", "\x0b"],
    ["same", "same"],
    [Decimal("1.50"), Decimal("2"), Decimal("-0.01")],
    [Decimal("1.50"), 2, None],
    [NOW, NOW, NOW],
    [NOW, NOW + timedelta(hours=1), NOW.astimezone(timezone(timedelta(hours=2)))],
    [{"a": "b\\c\n", "n": None}, [1, "x\ty"], {}],
    [LedgerTransaction.Kind.EARN, LedgerTransaction.Kind.EARN],
    [LedgerTransaction.Kind.EARN, "earn", LedgerTransaction.Kind.BONUS],
    [1.5, "x", False],
]


@pytest.mark.parametrize("values", COLUMNS)
def test_a_column_is_the_text_of_its_values(values):
    assert _copy_column(list(values)) == [_copy_text(value) for value in values]


def test_the_same_object_in_every_row_is_one_text():
    moment = NOW
    assert _copy_column([moment] * 3) == [moment.isoformat()] * 3


PAYLOADS = [
    {"member_number": "123", "amount": "1.5", "line_items": None, "occurred_at": None},
    {"member_number": 123, "store_code": None, "line_items": [{"sku": "é", "n": 1}]},
    {"amount": Decimal("1.50"), "at": NOW, "flag": True, "ratio": 0.5},
    {},
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_fingerprints_are_the_ones_json_dumps_gave(payload):
    body = json.dumps(
        {"operation": "purchase_record", **payload},
        sort_keys=True,
        default=str,
        separators=(",", ":"),
    )
    expected = hashlib.sha256(body.encode()).hexdigest()
    assert request_fingerprint("purchase_record", **payload) == expected
    # Twice: the shared encoder keeps nothing from one call to the next.
    assert request_fingerprint("purchase_record", **payload) == expected


PURCHASES = [
    dict(member_number="800000012345", amount="123.45", currency="USD", reference="r-1"),
    dict(customer_reference='C "quoted" \\ back', amount="1", currency="EUR", reference="x"),
    dict(member_number="é×ü\u2028\x00\x1f\t\n", amount="2.5", currency="", reference=""),
    dict(member_number="1", store_code="S-1", occurred_at=NOW.isoformat(), amount="3"),
    dict(member_number=123, amount="1", currency="USD", reference="r"),  # not a string
    dict(member_number="1", amount="1.5", line_items=[{"sku": "a", "unit_price": Decimal("1.5")}]),
    dict(member_number=None, customer_reference=None, amount="1", reference=True),
]


@pytest.mark.parametrize("fields", PURCHASES)
def test_purchase_fingerprints_are_request_fingerprints(fields):
    fields = {
        "member_number": None,
        "customer_reference": None,
        "currency": "USD",
        "reference": "r",
        "store_code": None,
        "line_items": None,
        "occurred_at": None,
        **fields,
    }
    expected = request_fingerprint("purchase_record", **fields)
    assert purchase_fingerprint(**fields) == expected


def test_a_member_row_makes_the_instance_a_query_gives(programme):
    referrer = factories.member()
    member = factories.member(referred_by=referrer)
    (row,) = _member_rows(Member.objects.filter(pk=member.pk))
    assert (row.pk, row.member_number, row.status, row.referred_by_id) == (
        member.pk,
        member.member_number,
        member.status,
        referrer.pk,
    )
    queried = Member.objects.get(pk=member.pk)
    made = row.instance()
    assert made is row.instance()  # made once
    fields = [field.attname for field in Member._meta.concrete_fields]
    assert [getattr(made, name) for name in fields] == [getattr(queried, name) for name in fields]
    assert (made._state.adding, made._state.db) == (False, queried._state.db)
    assert made.referred_by == referrer


def test_the_engine_needs_no_member_for_promotions_without_member_conditions(partner, programme):
    member = factories.member()
    double = factories.promotion(
        partner=partner, kind=Promotion.Kind.MULTIPLIER, multiplier=Decimal("2"), around=NOW
    )
    context = dict(partner=partner, tier=None, occurred_at=NOW, eligible=Decimal("10"), items=None)
    without = compute_points(PurchaseContext(member=None, **context), [double])
    with_member = compute_points(PurchaseContext(member=member, **context), [double])
    assert without == with_member
    assert without.points_by_funder() == (without.partner_points, without.operator_points)
    assert without.total == 20

    once = factories.promotion(
        partner=partner, kind=Promotion.Kind.FIXED_BONUS, bonus_points=5, per_member_limit=1
    )
    with pytest.raises(ValueError, match="member conditions"):
        compute_points(PurchaseContext(member=None, **context), [once])


def test_the_collector_is_paused_for_a_chunk_and_left_as_it_was():
    assert gc.isenabled()
    with _collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), _collector_paused():
        raise RuntimeError
    assert gc.isenabled()
    gc.disable()
    try:
        with _collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # it was off: left off
    finally:
        gc.enable()
