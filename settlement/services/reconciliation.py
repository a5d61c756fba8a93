"""Reconciliation: what Stripe holds for a run, compared with the run's lines.

Pay-outs: every transfer in the run's transfer group. Collections: each collection line's
PaymentIntent, and the partner's other intents that name the run. A difference is one of

    missing               a line recorded as paid that Stripe has nothing for
    extra                 a Stripe object in the run that no line accounts for
    duplicate             a second live transfer or payment for one line
    amount_mismatch       Stripe's amount differs from the line's: net of reversals for a
                          transfer; for a collection, what Stripe keeps of the payment (its
                          charge less refunds and disputed funds), the message saying why
    destination_mismatch  the money went to another account or came from another customer
    status_mismatch       Stripe moved money for a line recorded as not paid, or the reverse

The result is stored (`Reconciliation`), shown in the admin and to staff through the API.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from coalition.money import StripeAmountError, stripe_exponent, to_stripe_amount

from .. import stripe_gateway as gateway
from ..models import Reconciliation, SettlementLine, SettlementRun

logger = logging.getLogger(__name__)

LineStatus = SettlementLine.Status
Direction = SettlementLine.Direction


def _difference(
    kind: str,
    message: str,
    *,
    line: SettlementLine | None = None,
    stripe_id: str = "",
    expected: Any = "",
    actual: Any = "",
) -> dict:
    return {
        "kind": kind,
        "line": line.pk if line else None,
        "stripe_id": stripe_id or None,
        "expected": str(expected),
        "actual": str(actual),
        "message": message,
    }


def _in_stripe_units(amount: Decimal, currency: str) -> int | Decimal:
    """What Stripe should hold for `amount`, in Stripe's units. An amount Stripe cannot hold
    exactly (its line was refused before reaching Stripe) is still converted exactly, so any
    object Stripe holds for it compares by value and is reported, never raised over."""
    try:
        return to_stripe_amount(amount, currency)
    except StripeAmountError:
        scaled = amount.scaleb(stripe_exponent(currency))
        return int(scaled) if scaled == scaled.to_integral_value() else scaled.normalize()


def _check_transfers(run: SettlementRun, lines: list[SettlementLine]) -> tuple[list, int]:
    differences: list[dict] = []
    transfers = gateway.transfers_in_group(run.transfer_group)
    by_line: dict[str, list[gateway.TransferInfo]] = defaultdict(list)
    by_id = {t.id: t for t in transfers}
    for transfer in transfers:
        by_line[transfer.metadata.get("settlement_line_reference", "")].append(transfer)
    accounted: set[str] = set()
    for line in lines:
        if line.direction != Direction.PAY_OUT and not line.stripe_object_id.startswith("tr_"):
            continue
        own = list(by_line.get(str(line.reference), []))
        if line.stripe_object_id in by_id and by_id[line.stripe_object_id] not in own:
            own.append(by_id[line.stripe_object_id])
        accounted.update(t.id for t in own)
        live = [t for t in own if not t.reversed]
        expected_amount = _in_stripe_units(line.net_amount, line.currency)
        destination = (line.partner or line.charity).stripe_account_id
        if line.status == LineStatus.PAID:
            if not live:
                differences.append(
                    _difference(
                        "missing",
                        f"Line {line.pk} is paid but Stripe holds no live transfer for it",
                        line=line,
                        stripe_id=line.stripe_object_id,
                        expected=f"{expected_amount} {line.currency}",
                        actual="none",
                    )
                )
                continue
        elif live:
            differences.append(
                _difference(
                    "status_mismatch",
                    f"Line {line.pk} is {line.status} but Stripe transferred money for it",
                    line=line,
                    stripe_id=live[0].id,
                    expected=line.status,
                    actual="paid",
                )
            )
        for extra in live[1:]:
            differences.append(
                _difference(
                    "duplicate",
                    f"Line {line.pk} was paid more than once",
                    line=line,
                    stripe_id=extra.id,
                    expected="one transfer",
                    actual=f"{len(live)} transfers",
                )
            )
        for transfer in live[:1]:
            if transfer.net_amount != expected_amount or transfer.currency != line.currency:
                differences.append(
                    _difference(
                        "amount_mismatch",
                        f"Line {line.pk}: Stripe's transfer is for another amount",
                        line=line,
                        stripe_id=transfer.id,
                        expected=f"{expected_amount} {line.currency}",
                        actual=f"{transfer.net_amount} {transfer.currency}",
                    )
                )
            if transfer.destination != destination:
                differences.append(
                    _difference(
                        "destination_mismatch",
                        f"Line {line.pk}: the transfer went to another account",
                        line=line,
                        stripe_id=transfer.id,
                        expected=destination or "(no account on file)",
                        actual=transfer.destination,
                    )
                )
    for transfer in transfers:
        if transfer.id not in accounted and not transfer.reversed:
            differences.append(
                _difference(
                    "extra",
                    "A transfer in the run's transfer group that no line accounts for",
                    stripe_id=transfer.id,
                    expected="none",
                    actual=f"{transfer.net_amount} {transfer.currency} to {transfer.destination}",
                )
            )
    return differences, len(transfers)


# --------------------------------------------------------------------------- kept money

#: Dispute statuses under which the disputed funds are with the platform: inquiries
#: (``warning_*``) withdraw nothing, a won dispute gives them back. Any other status, also
#: one Stripe adds later, counts as withdrawn, so that finance hears of it.
_DISPUTE_FUNDS_KEPT = frozenset(
    {"warning_needs_response", "warning_under_review", "warning_closed", "won", "prevented"}
)


@dataclass(frozen=True)
class KeptPayment:
    """What Stripe keeps of a succeeded payment: its charge, less refunds and the funds
    disputes have withdrawn, in Stripe's units."""

    charge_id: str
    charged: int
    refunded: int
    disputes: tuple[tuple[str, str, int], ...] = ()  # (id, status, amount withdrawn)

    @property
    def withdrawn(self) -> int:
        return sum(amount for _, _, amount in self.disputes)

    @property
    def amount(self) -> int:
        return max(self.charged - self.refunded - self.withdrawn, 0)

    def describe(self, currency: str) -> str:
        """Why Stripe keeps less than it charged, for finance."""
        parts = []
        if self.refunded:
            whole = " in full" if self.refunded >= self.charged else ""
            parts.append(f"{self.refunded} {currency} refunded{whole}")
        for dispute_id, status, amount in self.disputes:
            parts.append(f"{amount} {currency} disputed ({dispute_id}, {status})")
        return "; ".join(parts)


def _payment_kept(payment_id: str) -> KeptPayment | None:
    """What Stripe keeps of a succeeded PaymentIntent, from its latest charge (refunds, and
    the funds its disputes withdrew); ``None`` if the intent has no charge."""
    charge = gateway.payment_intent_charge(payment_id)
    if charge is None:
        return None
    disputes = [d for d in charge.disputes if d[1] not in _DISPUTE_FUNDS_KEPT]
    if charge.disputed and not charge.disputes:
        # Disputed, yet no dispute to read: assume the worst, and say so.
        disputes = [
            ("dispute not found", "unknown", max(charge.amount - charge.amount_refunded, 0))
        ]
    return KeptPayment(
        charge_id=charge.id,
        charged=charge.amount,
        refunded=charge.amount_refunded,
        disputes=tuple(disputes),
    )


def _check_payments(run: SettlementRun, lines: list[SettlementLine]) -> tuple[list, int]:
    differences: list[dict] = []
    seen: dict[str, gateway.PaymentInfo] = {}
    collections = [line for line in lines if line.direction == Direction.COLLECT]
    for line in collections:
        expected_amount = _in_stripe_units(-line.net_amount, line.currency)
        payment = None
        kept = None
        if line.stripe_object_id:
            payment = gateway.payment_intent_retrieve(line.stripe_object_id)
            seen[payment.id] = payment
            if payment.succeeded:
                kept = _payment_kept(payment.id)
        # A succeeded payment refunded in full (or lost to a dispute) holds no money, as a
        # fully reversed transfer.
        holds_money = bool(payment and payment.succeeded and (kept is None or kept.amount))
        if line.status == LineStatus.PAID:
            if payment is None or not payment.succeeded:
                differences.append(
                    _difference(
                        "missing",
                        f"Line {line.pk} is collected but Stripe holds no succeeded payment",
                        line=line,
                        stripe_id=line.stripe_object_id,
                        expected=f"{expected_amount} {line.currency}",
                        actual=payment.status if payment else "none",
                    )
                )
                continue
        elif holds_money:
            differences.append(
                _difference(
                    "status_mismatch",
                    f"Line {line.pk} is {line.status} but Stripe collected its payment",
                    line=line,
                    stripe_id=payment.id,
                    expected=line.status,
                    actual=payment.status,
                )
            )
        elif payment is not None and payment.succeeded:
            continue  # not paid, and Stripe gave all of it back: they agree
        if payment is None:
            continue
        actual_amount = kept.amount if kept is not None else payment.amount
        if actual_amount != expected_amount or payment.currency != line.currency:
            message = f"Line {line.pk}: Stripe's payment is for another amount"
            if kept is not None and kept.amount != kept.charged:
                message = (
                    f"Line {line.pk}: Stripe keeps {kept.amount} of the {kept.charged} "
                    f"{payment.currency} collected ({kept.describe(payment.currency)})"
                )
            differences.append(
                _difference(
                    "amount_mismatch",
                    message,
                    line=line,
                    stripe_id=payment.id,
                    expected=f"{expected_amount} {line.currency}",
                    actual=f"{actual_amount} {payment.currency}",
                )
            )
        if payment.customer != line.partner.stripe_customer_id:
            differences.append(
                _difference(
                    "destination_mismatch",
                    f"Line {line.pk}: the payment came from another customer",
                    line=line,
                    stripe_id=payment.id,
                    expected=line.partner.stripe_customer_id,
                    actual=payment.customer,
                )
            )
    # Other succeeded payments that name this run: charged twice, or by hand. One refunded
    # in full (or lost to a dispute) holds no money, as a fully reversed transfer.
    current = {line.stripe_object_id for line in collections}
    # Lines carried forward after Stripe was asked to collect them too: a payment of theirs
    # that succeeded late is money no line of this run accounts for.
    asked = collections + [
        line
        for line in lines
        if line.partner_id
        and line.stripe_object_id.startswith("pi_")
        and line.direction != Direction.COLLECT
    ]
    customers = sorted({line.partner.stripe_customer_id for line in asked} - {""})
    for customer in customers:
        try:
            payments = gateway.payment_intents_of_customer(customer)
        except gateway.PermanentError as exc:
            logger.warning("cannot list the payments of %s: %s", customer, exc)
            continue
        for payment in payments:
            seen.setdefault(payment.id, payment)
            names_run = payment.metadata.get("settlement_run_reference") == str(run.reference)
            if not (names_run and payment.succeeded and payment.id not in current):
                continue
            kept = _payment_kept(payment.id)
            kept_amount = kept.amount if kept is not None else payment.amount
            if not kept_amount:
                continue
            why = kept.describe(payment.currency) if kept is not None else ""
            differences.append(
                _difference(
                    "duplicate" if payment.metadata.get("settlement_line") else "extra",
                    "A succeeded payment naming this run that no line accounts for"
                    + (f" ({why})" if why else ""),
                    stripe_id=payment.id,
                    expected="none",
                    actual=f"{kept_amount} {payment.currency} from {payment.customer}",
                )
            )
    return differences, len(seen)


def _reached_stripe(line: SettlementLine) -> bool:
    """Could Stripe hold anything for this line?"""
    if line.stripe_object_id:
        return True
    if line.direction == Direction.PAY_OUT:
        return bool((line.partner or line.charity).stripe_account_id)
    if line.direction == Direction.COLLECT:
        return bool(line.partner.stripe_customer_id)
    return False


def run_reconcile(*, run: SettlementRun) -> Reconciliation:
    """Compare every line of the run with what Stripe holds, and store the result."""
    lines = list(run.lines.select_related("partner", "charity").order_by("id"))
    if any(_reached_stripe(line) for line in lines):
        transfer_differences, transfers = _check_transfers(run, lines)
        payment_differences, payments = _check_payments(run, lines)
        differences = transfer_differences + payment_differences
    else:  # nothing of this run was ever sent to Stripe: there is nothing to ask it
        differences, transfers, payments = [], 0, 0
    return Reconciliation.objects.create(
        run=run,
        clean=not differences,
        checked_lines=len(lines),
        stripe_objects=transfers + payments,
        differences=differences,
    )
