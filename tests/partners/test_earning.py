"""The earn rule engine (`purchase_record`): worked examples computed by hand, every rule of
the engine, who funds which points, idempotency, the programme's bonuses, and bad input."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from coalition import selectors, services
from coalition.errors import ErrorCode
from coalition.models import IdempotencyRecord, LedgerTransaction, Tier
from partners import services as partner_services
from partners.models import Promotion, PromotionAward, ReferralReward
from tests import factories

Kind = Promotion.Kind
NOW = datetime(2030, 3, 15, 12, 0, tzinfo=UTC)


def legs(txn: LedgerTransaction) -> dict[str, int]:
    """A transaction's entries keyed by account kind."""
    return {kind: points for kind, points in txn.entries.values_list("account__kind", "points")}


def breakdown(txn: LedgerTransaction) -> list[tuple]:
    return [
        (part["kind"], part["label"], part["points"], part["fundedBy"])
        for part in txn.metadata["breakdown"]
    ]


def balance(member) -> int:
    return selectors.member_balance(member=member).balance


def buy(partner, member, amount, *, now=NOW, **kwargs):
    return factories.purchase(partner, member, amount, now=now, **kwargs)


@pytest.fixture
def tiers(db):
    """Base (×1), Silver from 1000 qualifying points (×1.5), Gold from 5000 (×2)."""
    return {
        "base": Tier.objects.create(code="base", name="Base", qualifying_points=0),
        "silver": Tier.objects.create(
            code="silver", name="Silver", qualifying_points=1000, earn_multiplier=Decimal("1.5")
        ),
        "gold": Tier.objects.create(
            code="gold", name="Gold", qualifying_points=5000, earn_multiplier=Decimal("2")
        ),
    }


def promote(**kwargs):
    return factories.promotion(around=NOW, **kwargs)


# --------------------------------------------------------------------------- worked examples


def test_worked_example_two_items_one_excluded_tier_and_two_stacked_promotions(
    member, other_partner, tiers
):
    """A Silver member buys at GROCER, which excludes gift cards:

        3 × APL-1 (produce) at 12.50  = 37.50   earns
        1 × GC-50 (gift-cards) at 50  = 50.00   excluded
        amount                          87.50,  eligible 37.50

    base           floor(37.50 × 1)                = 37   partner
    Silver ×1.5    floor(37.5 × 1.5 = 56.25) − 37  = 19   partner
    GROCER ×2      floor(56.25 × 2 = 112.5) − 56   = 56   partner (its own promotion)
    Coalition ×1.5 floor(112.5 × 1.5 = 168.75)−112 = 56   operator (coalition-wide)
    total          floor(37.5 × 1.5 × 2 × 1.5)     = 168  = 112 partner + 56 operator
    """
    # Given a Silver member (1000 points earned elsewhere yesterday) and GROCER's promotions
    factories.earn(member, other_partner, 1000, now=NOW - timedelta(days=1))
    assert services.member_tier(member=member) == tiers["silver"]
    grocer = factories.PartnerFactory(code="GROCER", excluded_categories=["gift-cards"])
    promote(partner=grocer, name="GROCER double points", multiplier=Decimal("2"))
    promote(partner=None, name="Coalition spring", multiplier=Decimal("1.5"))

    # When the purchase is recorded
    result = buy(
        grocer,
        member,
        "87.50",
        line_items=[
            {"sku": "APL-1", "category": "produce", "quantity": 3, "unit_price": "12.50"},
            {"sku": "GC-50", "category": "Gift-Cards", "quantity": 1, "unit_price": "50.00"},
        ],
    )

    # Then the member gets 168 points, with the breakdown computed above
    assert result.points_awarded == 168
    assert balance(member) == 1000 + 168
    txn = result.transaction
    assert txn.metadata["eligibleAmount"] == "37.50"
    assert [row[0:1] + row[2:] for row in breakdown(txn)] == [
        ("base", 37, "partner"),
        ("tier", 19, "partner"),
        ("promotion", 56, "partner"),
        ("promotion", 56, "operator"),
    ]
    assert [row[1] for row in breakdown(txn)][1:] == [
        "Silver tier",
        "GROCER double points",
        "Coalition spring",
    ]
    # And GROCER issues its 112 points, the operator's marketing account the other 56
    assert legs(txn) == {"partner_issued": -112, "operator_marketing": -56, "member_wallet": 168}
    assert txn.entries.get(points=-112).account.partner_id == grocer.pk
    assert selectors.ledger_check().ok


def test_exclusive_promotion_wins_alone(member, partner):
    """10.00 spent: ×2 exclusive adds 10, ×3 exclusive adds 20, the +50 bonus is not
    exclusive. The best exclusive (×3) applies alone: 10 + 20 = 30."""
    # Given two exclusive multipliers and an ordinary bonus
    promote(partner=partner, name="Double", multiplier=Decimal("2"), exclusive=True)
    triple = promote(partner=partner, name="Triple", multiplier=Decimal("3"), exclusive=True)
    promote(partner=partner, name="Bonus", kind=Kind.FIXED_BONUS, bonus_points=50)

    # When the member spends 10.00
    result = buy(partner, member, "10.00")

    # Then only the triple applied
    assert result.points_awarded == 30
    assert [(kind, points) for kind, _label, points, _by in breakdown(result.transaction)] == [
        ("base", 10),
        ("promotion", 20),
    ]
    assert breakdown(result.transaction)[1] == ("promotion", "Triple", 20, "partner")
    assert list(PromotionAward.objects.values_list("promotion_id", "points")) == [(triple.pk, 20)]


def test_fixed_bonus_adds_its_points_after_the_multipliers(member, partner):
    """25.00 spent: base 25, ×2 → 50 (+25), then +40 fixed: 90."""
    # Given a multiplier and a fixed bonus
    promote(partner=partner, name="Double", multiplier=Decimal("2"))
    promote(partner=partner, name="Forty", kind=Kind.FIXED_BONUS, bonus_points=40)

    # When the member spends 25.00
    result = buy(partner, member, "25.00")

    # Then the bonus is not multiplied
    assert result.points_awarded == 90
    assert [row[2] for row in breakdown(result.transaction)] == [25, 25, 40]


def test_minimum_spend_counts_the_eligible_amount_only(member, partner):
    # Given a +100 bonus from 50.00 of eligible spend, and gift cards excluded
    partner.excluded_categories = ["gift-cards"]
    partner.save()
    promote(partner=partner, kind=Kind.FIXED_BONUS, bonus_points=100, min_spend=Decimal("50"))

    # When the member spends 49.99, then 60.00 of which 20.00 are gift cards, then 50.00
    below = buy(partner, member, "49.99")
    mostly_gift_cards = buy(
        partner,
        member,
        "60.00",
        line_items=[
            {"sku": "A", "category": "food", "quantity": 1, "unit_price": "40.00"},
            {"sku": "G", "category": "gift-cards", "quantity": 1, "unit_price": "20.00"},
        ],
    )
    at_minimum = buy(partner, member, "50.00")

    # Then only the last reaches the minimum
    assert below.points_awarded == 49
    assert mostly_gift_cards.points_awarded == 40
    assert at_minimum.points_awarded == 150


@pytest.mark.parametrize(
    ("condition", "basket", "applies"),
    [
        ({"categories": ["Dairy"]}, [("MILK", "dairy")], True),
        ({"categories": ["dairy"]}, [("BREAD", "bakery")], False),
        ({"categories": ["gift-cards"]}, [("GC", "gift-cards"), ("BREAD", "bakery")], False),
        ({"skus": ["SKU-42"]}, [("SKU-42", "toys"), ("BREAD", "bakery")], True),
        ({"skus": ["SKU-42"]}, [("SKU-43", "toys")], False),
    ],
    ids=["category-in", "category-out", "excluded-category", "sku-in", "sku-out"],
)
def test_category_and_sku_conditions(member, partner, condition, basket, applies):
    # Given a +20 bonus for baskets with a category or a SKU (gift cards earn nothing)
    partner.excluded_categories = ["gift-cards"]
    partner.save()
    promote(partner=partner, kind=Kind.FIXED_BONUS, bonus_points=20, **condition)
    items = [
        {"sku": sku, "category": category, "quantity": 1, "unit_price": "5.00"}
        for sku, category in basket
    ]

    # When the member buys that basket
    result = buy(partner, member, f"{5 * len(basket)}.00", line_items=items)

    # Then the bonus is there only when the condition holds (an excluded item never counts)
    eligible = 5 * sum(1 for _sku, category in basket if category != "gift-cards")
    assert result.points_awarded == eligible + (20 if applies else 0)


def test_tier_condition(partner, other_partner, programme, tiers):
    """Gold member, 10.00: base 10, Gold ×2 → +10, Gold-only bonus +30 = 50. A Silver member
    gets 10 + 5 (×1.5) and no bonus."""
    # Given a bonus for Gold members only, a Gold and a Silver member
    promote(partner=partner, kind=Kind.FIXED_BONUS, bonus_points=30, tiers=[tiers["gold"]])
    gold, silver = factories.member(), factories.member()
    factories.earn(gold, other_partner, 5000, now=NOW - timedelta(days=1))
    factories.earn(silver, other_partner, 1000, now=NOW - timedelta(days=1))

    # When both spend 10.00
    gold_result = buy(partner, gold, "10.00")
    silver_result = buy(partner, silver, "10.00")

    # Then only the Gold member gets the bonus
    assert gold_result.points_awarded == 50
    assert silver_result.points_awarded == 15


def test_first_purchase_at_the_partner_only(member, partner, other_partner):
    # Given a welcome-to-the-shop bonus at one partner, and a purchase elsewhere before
    promote(partner=partner, kind=Kind.FIXED_BONUS, bonus_points=100, first_purchase_only=True)
    buy(other_partner, member, "10.00")

    # When the member buys there twice
    first = buy(partner, member, "10.00")
    second = buy(partner, member, "10.00")

    # Then the first purchase at this partner gets the bonus, the next does not
    assert (first.points_awarded, second.points_awarded) == (110, 10)


def test_per_member_limit(member, partner):
    # Given a +5 bonus limited to 2 per member
    promote(partner=partner, kind=Kind.FIXED_BONUS, bonus_points=5, per_member_limit=2)

    # When the member buys three times, and another member once
    results = [buy(partner, member, "10.00").points_awarded for _ in range(3)]
    other = buy(partner, factories.member(), "10.00")

    # Then the member got it twice, the other member once
    assert results == [15, 15, 10]
    assert other.points_awarded == 15


def test_cross_brand_bonus_first_time_at_a_second_partner_in_a_calendar_month(member):
    # Given a coalition-wide +100 for shopping at a second different partner in a month
    a, b, c = (factories.PartnerFactory() for _ in range(3))
    factories.promotion(
        partner=None,
        kind=Kind.CROSS_BRAND,
        bonus_points=100,
        starts_at=datetime(2030, 3, 1, tzinfo=UTC),
        ends_at=datetime(2030, 5, 1, tzinfo=UTC),
    )

    def day(month, day_of_month):
        return datetime(2030, month, day_of_month, 12, tzinfo=UTC)

    # When the member shops A, B, B, C in March, then C, A in April
    points = [
        buy(shop, member, "10.00", now=when).points_awarded
        for shop, when in [
            (a, day(3, 15)),  # first partner this month
            (b, day(3, 16)),  # second different partner: bonus
            (b, day(3, 17)),  # not the first time at B this month
            (c, day(3, 18)),  # already had it this month
            (c, day(4, 2)),  # April: first partner again
            (a, day(4, 3)),  # second different partner in April: bonus
        ]
    ]

    # Then the bonus came once in March and once in April
    assert points == [10, 110, 10, 10, 10, 110]


@pytest.mark.parametrize(
    ("owner", "expected_legs"),
    [
        ("partner", {"partner_issued": -50, "member_wallet": 50}),
        ("coalition", {"partner_issued": -10, "operator_marketing": -40, "member_wallet": 50}),
    ],
)
def test_who_pays_partner_or_operator(member, partner, owner, expected_legs):
    # Given a +40 bonus run by the partner itself, or by the coalition
    promote(partner=partner if owner == "partner" else None, kind=Kind.FIXED_BONUS, bonus_points=40)

    # When the member spends 10.00
    result = buy(partner, member, "10.00")

    # Then the bonus lands on the account of whoever funds it
    assert legs(result.transaction) == expected_legs


def test_budgeted_multiplier_out_of_budget_does_not_boost_the_next_multiplier(member, partner):
    """10.00 spent, ×2 (budget spent) then ×2: base 10, the first adds 0, the second doubles
    what the member really has, 10 → 20: total 20 (not 30, as if the first still counted)."""
    # Given a spent-out ×2 promotion and another ×2
    promote(partner=partner, name="A", multiplier=Decimal("2"), budget_points=5, awarded_points=5)
    promote(partner=partner, name="B", multiplier=Decimal("2"))

    # When the member spends 10.00
    result = buy(partner, member, "10.00")

    # Then only B added its points
    assert result.points_awarded == 20
    assert [row[1:3] for row in breakdown(result.transaction)][1:] == [("B", 10)]


# --------------------------------------------------------------------------- idempotency


def test_zero_point_purchase_returns_zero_writes_no_transaction_and_is_idempotent(member, partner):
    # Given a purchase too small to earn a point
    before = LedgerTransaction.objects.count()

    # When it is recorded, then retried with the same key
    first = buy(partner, member, "0.99", idempotency_key="pos-1")
    retry = buy(partner, member, "0.99", idempotency_key="pos-1")

    # Then it is 0 points, no ledger transaction, and the retry replays it
    assert (first.points_awarded, first.transaction, first.replayed) == (0, None, False)
    assert (retry.points_awarded, retry.transaction, retry.replayed) == (0, None, True)
    assert LedgerTransaction.objects.count() == before
    assert IdempotencyRecord.objects.filter(idempotency_key="pos-1").count() == 1
    # And the same key for another purchase is a conflict that writes nothing
    factories.assert_refused_all(
        ErrorCode.IDEMPOTENCY_CONFLICT,
        lambda: buy(partner, member, "25.00", idempotency_key="pos-1"),
        field="idempotencyKey",
    )


def test_replay_returns_the_first_result_and_another_payload_is_a_conflict(member, partner):
    # Given a recorded purchase
    first = buy(partner, member, "42.00", idempotency_key="pos-2")

    # When the till retries it
    retry = buy(partner, member, "42.00", idempotency_key="pos-2")

    # Then the first result comes back and nothing more is earned
    assert retry.replayed is True
    assert retry.transaction.pk == first.transaction.pk
    assert retry.points_awarded == first.points_awarded == 42
    assert balance(member) == 42
    # And the same key with another amount is refused, writing nothing
    factories.assert_refused_all(
        ErrorCode.IDEMPOTENCY_CONFLICT,
        lambda: buy(partner, member, "43.00", idempotency_key="pos-2"),
        field="idempotencyKey",
    )


# --------------------------------------------------------------------------- programme bonuses


def test_referral_bonus_to_both_once_on_the_referees_first_purchase(programme, partner):
    # Given a 200-point referral bonus and a member referred by another
    programme.referral_bonus_points = 200
    programme.save()
    referrer = factories.member()
    referee = factories.member(referred_by=referrer)

    # When the referee buys twice
    buy(partner, referee, "10.00")
    buy(partner, referee, "10.00")

    # Then both got the bonus once, from the operator's marketing account
    assert balance(referee) == 10 + 200 + 10
    assert balance(referrer) == 200
    assert ReferralReward.objects.filter(referee=referee, referrer=referrer).count() == 1
    bonuses = LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.BONUS)
    assert sorted(bonuses.values_list("member_id", flat=True)) == sorted([referee.pk, referrer.pk])
    for bonus in bonuses:
        assert legs(bonus) == {"operator_marketing": -200, "member_wallet": 200}


def test_welcome_bonus_on_enrolment(programme, partner):
    # Given a 100-point welcome bonus
    programme.welcome_bonus_points = 100
    programme.save()

    # When a partner enrols a member, and retries the enrolment
    enrolment = partner_services.member_enroll(
        partner=partner, idempotency_key="enrol-1", email="new@example.com", display_name="New"
    )
    retry = partner_services.member_enroll(
        partner=partner, idempotency_key="enrol-1", email="new@example.com", display_name="New"
    )

    # Then the member has 100 operator-funded points, once
    member = enrolment.member
    assert (retry.replayed, retry.member.pk) == (True, member.pk)
    assert balance(member) == 100
    (bonus,) = LedgerTransaction.objects.filter(member=member)
    assert bonus.kind == LedgerTransaction.Kind.BONUS
    assert legs(bonus) == {"operator_marketing": -100, "member_wallet": 100}


def test_birthday_bonus_once_a_year(programme):
    # Given a 50-point birthday bonus, a member born on 10 June and one on 1 January
    programme.birthday_bonus_points = 50
    programme.save()
    june = factories.member(birth_date=date(1990, 6, 10))
    january = factories.member(birth_date=date(1990, 1, 1))

    # When the daily job runs twice on 10 June, and again next year
    given = [partner_services.birthday_bonuses_grant(today=date(2030, 6, 10)) for _ in range(2)]
    next_year = partner_services.birthday_bonuses_grant(today=date(2031, 6, 10))

    # Then the June member got it once each year, the January member not at all
    assert given == [1, 0]
    assert next_year == 1
    assert balance(june) == 100
    assert balance(january) == 0


def test_birthday_on_29_february_is_celebrated_on_28_february_in_other_years(programme):
    # Given a member born on 29 February
    programme.birthday_bonus_points = 50
    programme.save()
    leapling = factories.member(birth_date=date(1992, 2, 29))

    # When the job runs on 28 February of a non-leap year (twice), then of a leap year
    non_leap = [partner_services.birthday_bonuses_grant(today=date(2031, 2, 28)) for _ in "ab"]
    leap_28 = partner_services.birthday_bonuses_grant(today=date(2032, 2, 28))
    leap_29 = partner_services.birthday_bonuses_grant(today=date(2032, 2, 29))

    # Then 2031 gives it on the 28th once; 2032 gives it on the 29th, not the 28th
    assert non_leap == [1, 0]
    assert (leap_28, leap_29) == (0, 1)
    assert balance(leapling) == 100


# --------------------------------------------------------------------------- bad input


def test_unknown_partner_code_is_not_found(db):
    factories.assert_refused_all(
        ErrorCode.NOT_FOUND, lambda: partner_services.partner_get_by_code(code="NOPE")
    )


def test_currency_other_than_the_partners_is_refused(member, partner):
    factories.assert_refused_all(
        ErrorCode.CURRENCY_MISMATCH,
        lambda: buy(partner, member, "10.00", currency="EUR"),
        field="currency",
    )


@pytest.mark.parametrize(
    ("currency", "amount"),
    [
        ("USD", "0"),
        ("USD", "-5.00"),
        ("USD", "10.005"),
        ("USD", "ten"),
        ("USD", "NaN"),
        ("JPY", "100.5"),
        ("KWD", "1.2345"),
    ],
)
def test_amount_not_positive_or_too_precise_is_invalid(member, currency, amount):
    partner = factories.PartnerFactory(currency=currency)
    factories.assert_refused_all(
        ErrorCode.INVALID, lambda: buy(partner, member, amount), field="amount"
    )


@pytest.mark.parametrize(
    ("currency", "amount", "points"), [("JPY", "100", 100), ("KWD", "12.345", 12)]
)
def test_amount_with_the_currencys_own_decimals_is_accepted(member, currency, amount, points):
    partner = factories.PartnerFactory(currency=currency)
    assert buy(partner, member, amount).points_awarded == points


@pytest.mark.parametrize(
    "line_items",
    [
        [{"sku": "A", "category": "food", "quantity": 2, "unit_price": "10.00"}],
        [{"sku": "A", "category": "food", "quantity": 0, "unit_price": "40.00"}],
        ["not an object"],
    ],
    ids=["do-not-add-up", "zero-quantity", "not-an-object"],
)
def test_line_items_that_do_not_add_up_or_are_malformed_are_invalid(member, partner, line_items):
    error = factories.assert_refused_all(
        ErrorCode.INVALID, lambda: buy(partner, member, "40.00", line_items=line_items)
    )
    assert error.field.startswith("lineItems")


def test_suspended_partner_cannot_record_purchases(member, partner):
    partner_services.partner_set_status(partner=partner, status="suspended")
    factories.assert_refused_all(ErrorCode.INVALID_STATE, lambda: buy(partner, member, "10.00"))


def test_unknown_store_code_is_not_found_and_a_known_one_is_recorded(member, partner):
    partner_services.store_create(partner=partner, code="NYC-5TH")
    factories.assert_refused_all(
        ErrorCode.NOT_FOUND,
        lambda: buy(partner, member, "10.00", store_code="NOPE"),
        field="storeCode",
    )
    result = buy(partner, member, "10.00", store_code="NYC-5TH")
    assert result.transaction.metadata["store"] == "NYC-5TH"


def test_purchase_in_the_future_is_invalid(member, partner):
    factories.assert_refused_all(
        ErrorCode.INVALID,
        lambda: buy(partner, member, "10.00", occurred_at=NOW + timedelta(hours=1)),
        field="occurredAt",
    )


def test_promotion_with_a_reversed_window_is_refused_by_the_database(partner):
    before = Promotion.objects.count()
    with pytest.raises(IntegrityError, match="promotion_window_forward"), transaction.atomic():
        Promotion.objects.create(
            partner=partner,
            name="Backwards",
            kind=Kind.MULTIPLIER,
            multiplier=Decimal("2"),
            starts_at=NOW,
            ends_at=NOW - timedelta(days=1),
        )
    assert Promotion.objects.count() == before


def test_unknown_member_is_not_found(partner, programme):
    factories.assert_refused_all(
        ErrorCode.NOT_FOUND,
        lambda: partner_services.purchase_record(
            partner=partner,
            idempotency_key="k-unknown",
            member_number="6337000000000000",
            amount="10.00",
            currency="USD",
            reference="r",
            now=NOW,
        ),
        field="memberNumber",
    )


def test_suspended_member_cannot_earn(member, partner):
    services.member_set_status(member=member, status="suspended")
    factories.assert_refused_all(ErrorCode.MEMBER_NOT_ACTIVE, lambda: buy(partner, member, "10.00"))
