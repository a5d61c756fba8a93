"""Money: exact decimals with an ISO 4217 currency. Minor units exist only at the Stripe edge.

One function turns points into money (`points_value`), rounding once, half-even, to the
currency's minor unit (ISO 4217's: the ledger's own precision).

Stripe's integer amounts are a separate matter (`to_stripe_amount`, `from_stripe_amount`):
for some currencies Stripe's unit is not ISO 4217's minor unit (ISK: 100 = 1 króna), and for
others it accepts only some of them (KWD: multiples of 10 fils).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

# ISO 4217 minor-unit exponents that are not 2: the precision the ledger keeps.
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


def points_value(points: int, price: Decimal, currency: str) -> Decimal:
    """What `points` are worth at `price` per point, rounded once to the minor unit."""
    return round_money(Decimal(points) * price, currency)


# Digits before the decimal point a caller's amount may have: what the purchase columns hold
# (`LedgerTransaction.purchase_amount`: 18 digits, 4 of them places). It also keeps amounts
# well inside decimal's 28-digit context, where rounding them could otherwise raise.
MAX_INTEGER_DIGITS = 14


def parse_amount(value, currency: str) -> Decimal:
    """A caller's amount: a finite decimal below 10**MAX_INTEGER_DIGITS, with no more places
    than the currency has. Anything else raises ValueError with the reason."""
    try:
        amount = Decimal(value if type(value) is str else str(value))
    except (InvalidOperation, ValueError) as exc:
        raise ValueError("not a decimal number") from exc
    if not amount.is_finite():
        raise ValueError("not a finite number")
    if amount and amount.adjusted() >= MAX_INTEGER_DIGITS:
        raise ValueError(f"too large: at most {MAX_INTEGER_DIGITS} digits before the point")
    exponent = _EXPONENTS.get(currency, 2)  # minor_exponent(currency), without the call
    if -amount.as_tuple().exponent > exponent and amount != round_money(amount, currency):
        raise ValueError(f"{currency} has {minor_exponent(currency)} decimal places at most")
    return amount


# --------------------------------------------------------------------------- Stripe's units
#
# Stripe's documented rules (docs.stripe.com/currencies, "Zero-decimal currencies", "Three-
# decimal currencies", "Special cases"), which differ from ISO 4217 in places:
# * zero-decimal currencies: the API amount is the amount itself (500 = ¥500);
# * ISK and UGX are zero-decimal in practice but two-decimal in the API, for backwards
#   compatibility: 100 = 1 unit, and the API amount must be divisible by 100;
# * BHD, JOD, KWD, OMR and TND are three-decimal, and the API amount's last digit must be 0;
# * HUF and TWD are two-decimal for transfers and charges; only bank payouts must be whole
#   units, and this platform never creates payouts (Stripe pays connected accounts out).
_STRIPE_ZERO_DECIMAL = frozenset(
    "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF VND VUV XAF XOF XPF".split()
)
_STRIPE_THREE_DECIMAL = frozenset("BHD JOD KWD OMR TND".split())
_STRIPE_WHOLE_UNITS_ONLY = frozenset("ISK UGX".split())


class StripeAmountError(ValueError):
    """An amount that cannot be sent to Stripe exactly in its currency."""


def stripe_exponent(currency: str) -> int:
    """The power of ten between an amount and Stripe's integer for it (ISK: 2, JPY: 0)."""
    code = currency.upper()
    if code in _STRIPE_ZERO_DECIMAL:
        return 0
    if code in _STRIPE_THREE_DECIMAL:
        return 3
    return 2


def _stripe_step(code: str) -> int:
    """What Stripe's integer must be a multiple of."""
    if code in _STRIPE_WHOLE_UNITS_ONLY:
        return 100
    if code in _STRIPE_THREE_DECIMAL:
        return 10
    return 1


def stripe_quantum(currency: str) -> Decimal:
    """The smallest amount Stripe moves in the currency (ISK: 1, KWD: 0.01, USD: 0.01)."""
    code = currency.upper()
    return Decimal(_stripe_step(code)).scaleb(-stripe_exponent(code)).normalize()


def to_stripe_amount(amount: Decimal, currency: str) -> int:
    """The integer Stripe expects for `amount` in `currency` (12.34 USD: 1234; 500 JPY: 500;
    5 ISK: 500; 1.230 KWD: 1230).

    An amount Stripe cannot represent exactly (1.005 KWD, 40.50 ISK, 0.001 USD) raises
    StripeAmountError and is never rounded here: the ledger's amount is what a partner or a
    charity is owed, so a settlement line of such an amount is refused before anything is
    sent to Stripe and shows this reason, rather than moving a different sum than the books
    say. The ledger itself keeps ISO 4217 precision (`round_money`)."""
    code = currency.upper()
    scaled = amount.scaleb(stripe_exponent(code))
    if scaled.is_finite() and scaled == scaled.to_integral_value():
        if not int(scaled) % _stripe_step(code):
            return int(scaled)
    raise StripeAmountError(
        f"{amount} {code} cannot be sent through Stripe: it moves {code} only in "
        f"multiples of {stripe_quantum(code)} {code}"
    )


def round_for_stripe(amount: Decimal, currency: str) -> Decimal:
    """Round once, half-even, to what both the books and Stripe can hold: the currency's
    minor unit, or Stripe's coarser step where it has one (KWD: 0.01, not 0.001). Settlement
    lines are rounded so (the remainder is the run's rounding revenue), so that every line
    can be paid or collected exactly."""
    step = max(quantum(currency), stripe_quantum(currency))
    return amount.quantize(step, rounding=ROUND_HALF_EVEN).quantize(quantum(currency))


def from_stripe_amount(value: int, currency: str) -> Decimal:
    """The amount Stripe's integer stands for (500 ISK from Stripe: 5; 1230 KWD: 1.230)."""
    return Decimal(int(value)).scaleb(-stripe_exponent(currency))


@dataclass(frozen=True)
class Money:
    amount: Decimal
    currency: str

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"
