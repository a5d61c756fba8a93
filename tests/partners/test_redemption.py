"""Burning points at a partner's till: one-shot, authorise-then-capture, void, refunds; the
programme's guards; and every partner reaches only its own holds and transactions."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from coalition import selectors
from coalition.errors import ErrorCode
from coalition.models import LedgerTransaction, RedemptionHold
from coalition.money import Money
from partners import services
from tests import factories

NOW = datetime(2030, 3, 15, 12, 0, tzinfo=UTC)


def legs(txn: LedgerTransaction) -> dict[str, int]:
    return {kind: points for kind, points in txn.entries.values_list("account__kind", "points")}


def balance(member) -> selectors.Balance:
    return selectors.member_balance(member=member)


def redeem(partner, member, points, *, now=NOW, **kwargs):
    kwargs.setdefault("idempotency_key", factories.key("redeem"))
    kwargs.setdefault("reference", "till")
    return services.points_redeem(
        partner=partner, member_number=member.member_number, points=points, now=now, **kwargs
    )


@pytest.fixture
def brand(db):
    """Issuance 0.0150, redemption 0.0125 per point, in USD."""
    partner, _key = factories.onboarded_partner(issuance_price="0.0150", redemption_price="0.0125")
    return partner


@pytest.fixture
def rich_member(member, brand):
    """A member with 10,000 points."""
    factories.earn(member, brand, 10_000, now=NOW - timedelta(days=1))
    return member


@pytest.mark.parametrize(
    ("currency", "price", "points", "discount"),
    [
        ("USD", "0.0125", 333, "4.16"),  # 4.1625 rounds to the cent
        ("USD", "0.0125", 1000, "12.50"),
        ("JPY", "0.5", 333, "166"),  # 166.5: half-even, no minor unit
        ("JPY", "0.5", 335, "168"),  # 167.5
        ("KWD", "0.0031", 1001, "3.103"),  # three decimals
    ],
)
def test_discount_is_points_times_redemption_price_rounded_in_the_partners_currency(
    member, currency, price, points, discount
):
    # Given a partner in that currency and a member with points
    partner, _key = factories.onboarded_partner(
        currency=currency, issuance_price=price, redemption_price=price
    )
    factories.earn(member, partner, 5000, now=NOW - timedelta(days=1))

    # When points are redeemed at its till
    redemption = redeem(partner, member, points)

    # Then the member's discount is rounded once to the currency's minor unit
    assert redemption.discount == Money(Decimal(discount), currency)
    assert balance(member).balance == 5000 - points
    assert legs(redemption.transaction) == {"member_wallet": -points, "partner_redeemed": points}


def test_redeem_replay_returns_the_first_result(rich_member, brand):
    first = redeem(brand, rich_member, 400, idempotency_key="till-7")
    retry = redeem(brand, rich_member, 400, idempotency_key="till-7")

    assert retry.replayed is True
    assert retry.transaction.pk == first.transaction.pk
    assert retry.discount == first.discount == Money(Decimal("5.00"), "USD")
    assert balance(rich_member).balance == 9600
    factories.assert_refused_all(
        ErrorCode.IDEMPOTENCY_CONFLICT,
        lambda: redeem(brand, rich_member, 401, idempotency_key="till-7"),
    )


def test_minimum_redemption(rich_member, brand, programme):
    # Given a programme minimum of 100 points per redemption
    programme.min_redemption_points = 100
    programme.save()

    # When 99 points are redeemed, it is refused and nothing is written
    factories.assert_refused_all(
        ErrorCode.INVALID, lambda: redeem(brand, rich_member, 99), field="points"
    )
    # And so is a hold of 99
    factories.assert_refused_all(
        ErrorCode.INVALID,
        lambda: services.redemption_authorize(
            partner=brand,
            idempotency_key="h-99",
            member_number=rich_member.member_number,
            points=99,
            reference="till",
            now=NOW,
        ),
        field="points",
    )

    # Then 100 points go through
    assert redeem(brand, rich_member, 100).discount == Money(Decimal("1.25"), "USD")


def test_daily_burn_limit(rich_member, brand, programme):
    # Given a daily limit of 500 redeemed points
    programme.daily_burn_limit = 500
    programme.save()

    # When the member redeems 300 then 200 today
    redeem(brand, rich_member, 300)
    redeem(brand, rich_member, 200, now=NOW + timedelta(hours=1))

    # Then one more point today is over the limit, and nothing is written
    factories.assert_refused_all(
        ErrorCode.LIMIT_EXCEEDED,
        lambda: redeem(brand, rich_member, 1, now=NOW + timedelta(hours=2)),
        field="points",
    )
    # And tomorrow the limit starts again
    tomorrow = NOW.replace(hour=0) + timedelta(days=1)
    assert redeem(brand, rich_member, 500, now=tomorrow).transaction.member_points == -500
    assert balance(rich_member).balance == 10_000 - 1000


def test_insufficient_points_unknown_member_and_suspended_partner_are_refused(rich_member, brand):
    factories.assert_refused_all(
        ErrorCode.INSUFFICIENT_POINTS, lambda: redeem(brand, rich_member, 10_001)
    )
    factories.assert_refused_all(
        ErrorCode.NOT_FOUND,
        lambda: services.points_redeem(
            partner=brand,
            idempotency_key="x",
            member_number="6337000000000000",
            points=10,
            reference="till",
        ),
        field="memberNumber",
    )
    services.partner_set_status(partner=brand, status="suspended")
    factories.assert_refused_all(ErrorCode.INVALID_STATE, lambda: redeem(brand, rich_member, 10))


# --------------------------------------------------------------------------- two-phase


def authorize(partner, member, points, **kwargs):
    kwargs.setdefault("idempotency_key", factories.key("auth"))
    return services.redemption_authorize(
        partner=partner,
        member_number=member.member_number,
        points=points,
        reference="basket-1",
        now=NOW,
        **kwargs,
    )


def test_authorize_then_capture_part_of_the_hold(rich_member, brand):
    # Given 800 points held at the till
    hold = authorize(brand, rich_member, 800)
    assert balance(rich_member) == selectors.Balance(balance=10_000, held=800, spendable=9200)

    # When the till captures 600 of them
    redemption = services.redemption_capture(
        partner=brand, idempotency_key="cap-1", hold_id=hold.pk, points=600, now=NOW
    )

    # Then 600 are burned at the partner's price, the rest released
    assert redemption.discount == Money(Decimal("7.50"), "USD")
    assert balance(rich_member) == selectors.Balance(balance=9400, held=0, spendable=9400)
    hold.refresh_from_db()
    assert (hold.status, hold.captured_points) == (RedemptionHold.Status.CAPTURED, 600)


def test_void_releases_the_hold(rich_member, brand):
    hold = authorize(brand, rich_member, 800)

    voided = services.redemption_void(
        partner=brand, idempotency_key="void-1", hold_id=hold.pk, now=NOW
    )

    assert voided.status == RedemptionHold.Status.VOIDED
    assert balance(rich_member) == selectors.Balance(balance=10_000, held=0, spendable=10_000)


def test_another_partners_hold_is_not_found(rich_member, brand, other_partner):
    # Given a hold at one partner
    hold = authorize(brand, rich_member, 800)

    # When another partner tries to capture or void it
    for call in (
        lambda: services.redemption_capture(
            partner=other_partner, idempotency_key="cap-x", hold_id=hold.pk, now=NOW
        ),
        lambda: services.redemption_void(
            partner=other_partner, idempotency_key="void-x", hold_id=hold.pk, now=NOW
        ),
    ):
        # Then it does not exist for them, and nothing is written
        factories.assert_refused_all(ErrorCode.NOT_FOUND, call, field="holdId")
    assert RedemptionHold.objects.get(pk=hold.pk).status == RedemptionHold.Status.ACTIVE


# --------------------------------------------------------------------------- reversals


def test_partner_reverses_its_own_transactions_only(rich_member, brand, other_partner):
    # Given a purchase earned at one partner and a redemption at it
    earned = factories.purchase(brand, rich_member, "200.00", now=NOW).transaction
    burned = redeem(brand, rich_member, 1000).transaction
    assert balance(rich_member).balance == 10_000 + 200 - 1000

    # When another partner tries to reverse them, they are not found and nothing is written
    for txn in (earned, burned):
        factories.assert_refused_all(
            ErrorCode.NOT_FOUND,
            lambda txn=txn: services.partner_transaction_reverse(
                partner=other_partner, idempotency_key="rev-x", transaction_id=txn.pk
            ),
            field="transactionId",
        )

    # When the partner itself refunds half the purchase and the whole redemption
    partial = services.partner_transaction_reverse(
        partner=brand, idempotency_key="rev-1", transaction_id=earned.pk, points=100, now=NOW
    )
    refund = services.partner_transaction_reverse(
        partner=brand, idempotency_key="rev-2", transaction_id=burned.pk, now=NOW
    )

    # Then the points go back where they came from
    assert legs(partial) == {"member_wallet": -100, "partner_issued": 100}
    assert legs(refund) == {"member_wallet": 1000, "partner_redeemed": -1000}
    assert balance(rich_member).balance == 10_000 + 200 - 100
    assert selectors.ledger_check().ok
