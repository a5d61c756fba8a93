"""Money at the Stripe edge: the integers Stripe is sent for each currency follow Stripe's own
rules, not ISO 4217's minor units; an amount Stripe cannot move exactly is refused, never
rounded. And a caller's amount too large for decimal arithmetic is refused, not a crash."""

from decimal import Decimal

import pytest

from coalition.money import (
    MAX_INTEGER_DIGITS,
    StripeAmountError,
    from_stripe_amount,
    parse_amount,
    round_money,
    to_stripe_amount,
)


@pytest.mark.parametrize(
    "amount,currency,stripe_amount",
    [
        ("12.34", "USD", 1234),
        ("40.000000", "USD", 4000),  # as the settlement columns hold it (6 places)
        ("-200.00", "USD", -20000),  # a collection, seen from the line
        ("500", "JPY", 500),  # zero-decimal: the amount itself
        ("500.000000", "JPY", 500),
        ("5", "ISK", 500),  # two-decimal in Stripe's API: 100 = 1 króna
        ("4000.000000", "ISK", 400000),
        ("1.230", "KWD", 1230),  # three-decimal, last digit 0
        ("10.01", "KWD", 10010),
        ("12.34", "HUF", 1234),  # two-decimal for transfers and charges
        ("12.34", "usd", 1234),  # Stripe's own lower-case codes
    ],
)
def test_the_amount_stripe_is_sent(amount, currency, stripe_amount):
    assert to_stripe_amount(Decimal(amount), currency) == stripe_amount
    # and back: what Stripe reports is the same amount again
    assert from_stripe_amount(stripe_amount, currency) == Decimal(amount)


@pytest.mark.parametrize(
    "amount,currency,quantum",
    [
        ("1.005", "KWD", "0.01"),  # Stripe needs the last of three digits to be 0
        ("10.005", "BHD", "0.01"),
        ("40.5", "ISK", "1"),  # no fractional króna, although the API has two decimals
        ("12.5", "JPY", "1"),
        ("0.001", "USD", "0.01"),
    ],
)
def test_an_amount_stripe_cannot_move_exactly_is_refused_not_rounded(amount, currency, quantum):
    with pytest.raises(StripeAmountError) as refused:
        to_stripe_amount(Decimal(amount), currency)

    message = str(refused.value)
    assert f"{amount} {currency}" in message
    assert f"multiples of {quantum} {currency}" in message
    assert isinstance(refused.value, ValueError)


def test_a_payout_reported_by_stripe_in_isk_is_worth_a_hundredth_of_its_integer():
    # Given Stripe's integer for a 4,000 ISK payout
    # When it is read back
    amount = from_stripe_amount(400000, "ISK")

    # Then it is 4,000 krónur, as the ledger writes them
    assert round_money(amount, "ISK") == Decimal("4000")


@pytest.mark.parametrize(
    "value",
    [
        "99999999999999999999999999.999",  # more digits than decimal's context holds
        "1" * 40,
        "1e40",
        "1E+999999999",
        "-99999999999999999999999999.999",
        "100000000000000",  # 10**14: one digit more than the purchase column holds
    ],
)
def test_an_amount_too_large_is_a_value_error_not_a_crash(value):
    with pytest.raises(ValueError) as refused:
        parse_amount(value, "USD")

    assert str(refused.value) == (
        f"too large: at most {MAX_INTEGER_DIGITS} digits before the point"
    )


@pytest.mark.parametrize(
    "value,currency,expected",
    [
        ("99999999999999.99", "USD", Decimal("99999999999999.99")),
        ("99999999999999.990000000000000000000000", "USD", Decimal("99999999999999.99")),
        ("0E+50", "USD", Decimal(0)),
        ("12.340", "USD", Decimal("12.34")),
    ],
)
def test_the_largest_amounts_still_parse(value, currency, expected):
    assert parse_amount(value, currency) == expected
