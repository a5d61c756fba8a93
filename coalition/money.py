"""Money: exact decimals with an ISO 4217 currency. Minor units exist only at the Stripe edge.

One function turns points into money (`points_value`), rounding once, half-even, to the
currency's minor unit; `split_amount` splits an amount so the parts add back to the whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

# ISO 4217 minor-unit exponents that are not 2.
_EXPONENTS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip
# Currencies accepted for partners and the programme (ISO 4217 active codes, common subset).
CURRENCIES = frozenset(
    "AED AUD BGN BHD BRL CAD CHF CLP CNY CZK DKK EUR GBP HKD HUF IDR ILS INR ISK JOD JPY KRW "
    "KWD MXN MYR NOK NZD OMR PHP PLN QAR RON SAR SEK SGD THB TND TRY TWD USD ZAR".split()
)


def minor_exponent(currency: str) -> int:
    return _EXPONENTS.get(currency, 2)


def quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-minor_exponent(currency))


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round once, half-even, to the currency's minor unit."""
    return amount.quantize(quantum(currency), rounding=ROUND_HALF_EVEN)


def to_minor_units(amount: Decimal, currency: str) -> int:
    """Integer minor units for Stripe; the amount must already be rounded."""
    scaled = amount.scaleb(minor_exponent(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} {currency} is not a whole number of minor units")
    return int(scaled)


def points_value(points: int, price: Decimal, currency: str) -> Decimal:
    """What `points` are worth at `price` per point, rounded once to the minor unit."""
    return round_money(Decimal(points) * price, currency)


def parse_amount(value, currency: str) -> Decimal:
    """A caller's amount: a finite decimal with no more places than the currency has."""
    try:
        amount = Decimal(value if type(value) is str else str(value))
    except (InvalidOperation, ValueError) as exc:
        raise ValueError("not a decimal number") from exc
    if not amount.is_finite():
        raise ValueError("not a finite number")
    exponent = _EXPONENTS.get(currency, 2)  # minor_exponent(currency), without the call
    if -amount.as_tuple().exponent > exponent and amount != round_money(amount, currency):
        raise ValueError(f"{currency} has {minor_exponent(currency)} decimal places at most")
    return amount


@dataclass(frozen=True)
class Money:
    amount: Decimal
    currency: str

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"
