"""Executing a run through Stripe, line by line, resumably.

Each line is paid (a transfer to the counterparty's connected account) or collected (an
off-session PaymentIntent on the partner's saved payment method) in its own database
transaction that holds the line's row lock across the Stripe call: two executors never work
on the same line, and a crash anywhere rolls back to "pending". The Stripe request carries
an idempotency key derived from the line and its attempt, and before creating a transfer the
run's transfer group is consulted, so a re-run adopts what Stripe already did (even after
its idempotency window) instead of paying twice.

Amounts go to Stripe in Stripe's units (`to_stripe_amount`). A line whose amount Stripe cannot
move exactly (1.005 KWD: Stripe takes three-decimal currencies in multiples of 10) fails with
the code `amount_not_representable` before anything is sent for it; it is never rounded to
another sum than the books owe, and the run's other lines go ahead.

A charity that is no longer payable when its line comes to be paid (suspended after the run
was computed: `charity.selectors.charity_payable`) is not paid: its line fails with the code
`payee_not_payable`, nothing is sent to Stripe, and finance retries it once the charity is
verified again or carries it forward (the next run holds it while the charity stays
suspended). Partners have no such rule: the computation holds none of their lines either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from charity.models import Charity
from charity.selectors import charity_payable
from coalition.money import StripeAmountError, to_stripe_amount
from coalition.outbox import celery_task_enqueue

from .. import stripe_gateway as gateway
from ..models import SettlementLine, SettlementRun
from .common import SYSTEM_EXECUTION, record_transition

logger = logging.getLogger(__name__)

RunStatus = SettlementRun.Status
LineStatus = SettlementLine.Status
Direction = SettlementLine.Direction


@dataclass
class ExecutionResult:
    run_id: int
    paid: list[int] = field(default_factory=list)
    processing: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    transient: list[tuple[int, str]] = field(default_factory=list)
    status: str = ""


def line_metadata(line: SettlementLine) -> dict[str, str]:
    """What every Stripe object of a line says about it (for webhooks and reconciliation)."""
    return {
        "settlement_run": str(line.run_id),
        "settlement_run_reference": str(line.run.reference),
        "settlement_line": str(line.pk),
        "settlement_line_reference": str(line.reference),
        "settlement_attempt": str(line.attempt),
        "counterparty": (
            f"partner:{line.partner.code}" if line.partner_id else f"charity:{line.charity_id}"
        ),
    }


def _description(line: SettlementLine) -> str:
    return f"Coalition settlement run #{line.run_id}, line #{line.pk} ({line.counterparty_label})"


def _set_line_status(
    line: SettlementLine, to_status: str, *, label: str, note: str = "", user: Any = None
) -> None:
    from_status = line.status
    line.status = to_status
    line.updated_at = timezone.now()
    if to_status == LineStatus.PAID and line.paid_at is None:
        line.paid_at = line.updated_at
    line.save()
    record_transition(
        run=line.run,
        line=line,
        from_status=from_status,
        to_status=to_status,
        user=user,
        label=label,
        note=note,
    )


def _fail(line: SettlementLine, error: gateway.GatewayError, *, label: str) -> None:
    line.failure_code = (error.code or "")[:64]
    line.failure_reason = error.message
    if error.stripe_id and not line.stripe_object_id:
        line.stripe_object_id = error.stripe_id
    _set_line_status(line, LineStatus.FAILED, label=label, note=f"{error.code}: {error.message}")


def _stripe_amount(line: SettlementLine, amount: Decimal) -> int:
    """`amount` of the line in Stripe's units; one Stripe cannot move exactly fails the line
    for good, before any request is made for it."""
    try:
        return to_stripe_amount(amount, line.currency)
    except StripeAmountError as exc:
        raise gateway.PermanentError(str(exc), code="amount_not_representable") from exc


def _refuse_unpayable(line: SettlementLine, *, transfers_unknown: bool) -> None:
    """Fail a pay-out whose payee may no longer be paid, before anything is sent to Stripe.

    Only charities have such a rule (`charity_payable`; the computation holds no partner's
    line either). The charity's row stays locked until the line's transaction ends, so a
    suspension either comes first and holds the money, or waits for the transfer; the lock
    (FOR NO KEY UPDATE) does not hold up donations, which only share its key.
    """
    if not line.charity_id:
        return
    charity = Charity.objects.select_for_update(no_key=True).get(pk=line.charity_id)
    line.charity = charity
    if charity_payable(charity):
        return
    if charity.status == Charity.Status.VERIFIED:
        return  # payable but for its Stripe account: failed as `account_missing` below
    if transfers_unknown:
        # A transfer for this attempt made by a pass that crashed would be missed, and paid
        # again if finance later retried: keep the line pending until Stripe can be asked.
        raise gateway.TransientError(
            f"{line.counterparty_label} is not payable, but the run's transfers could not be "
            "listed to confirm that none was made for the line",
            code="transfers_unknown",
        )
    raise gateway.PermanentError(
        f"{line.counterparty_label} is {charity.get_status_display().lower()}: its money is "
        "held until it is verified again (nothing was sent to Stripe); retry the line then, "
        "or carry it forward",
        code="payee_not_payable",
    )


def _pay_out(
    line: SettlementLine,
    adopted: gateway.TransferInfo | None,
    *,
    transfers_unknown: bool = False,
) -> None:
    if adopted is None:  # an adopted transfer was made: the money has left already
        _refuse_unpayable(line, transfers_unknown=transfers_unknown)
    destination = (line.partner or line.charity).stripe_account_id
    if not destination:
        raise gateway.PermanentError(
            f"{line.counterparty_label} has no connected Stripe account", code="account_missing"
        )
    transfer = adopted or gateway.transfer_create(
        amount=_stripe_amount(line, line.net_amount),
        currency=line.currency,
        destination=destination,
        transfer_group=line.run.transfer_group,
        metadata=line_metadata(line),
        description=_description(line),
        idempotency_key=line.idempotency_key,
    )
    line.stripe_object_id = transfer.id
    line.stripe_status = "reversed" if transfer.reversed else "paid"
    if transfer.reversed:
        _fail(
            line,
            gateway.PermanentError("The transfer was reversed", code="transfer_reversed"),
            label=SYSTEM_EXECUTION,
        )
        return
    _set_line_status(line, LineStatus.PAID, label=SYSTEM_EXECUTION, note=transfer.id)


def _collect(line: SettlementLine) -> None:
    partner = line.partner
    if not partner.stripe_customer_id:
        raise gateway.PermanentError(
            f"{line.counterparty_label} has no Stripe customer to charge", code="customer_missing"
        )
    amount = _stripe_amount(line, -line.net_amount)
    payment_method = gateway.default_payment_method(partner.stripe_customer_id)
    payment = gateway.payment_intent_create(
        amount=amount,
        currency=line.currency,
        customer=partner.stripe_customer_id,
        payment_method=payment_method,
        transfer_group=line.run.transfer_group,
        metadata=line_metadata(line),
        description=_description(line),
        idempotency_key=line.idempotency_key,
    )
    apply_payment(line, payment, label=SYSTEM_EXECUTION)


def apply_payment(line: SettlementLine, payment: gateway.PaymentInfo, *, label: str) -> bool:
    """Move a collection line to what its PaymentIntent says, if that move is legal.
    Returns whether the line changed."""
    line.stripe_object_id = line.stripe_object_id or payment.id
    if payment.id != line.stripe_object_id:
        return False  # an older attempt's intent: it no longer speaks for the line
    line.stripe_status = payment.status
    if payment.succeeded and line.status in (LineStatus.PENDING, LineStatus.PROCESSING):
        _set_line_status(line, LineStatus.PAID, label=label, note=payment.id)
        return True
    if payment.failed and line.status in (LineStatus.PENDING, LineStatus.PROCESSING):
        _fail(
            line,
            gateway.PermanentError(
                payment.failure_message or f"The payment is {payment.status}",
                code=payment.failure_code or payment.status,
            ),
            label=label,
        )
        return True
    if not payment.succeeded and not payment.failed and line.status == LineStatus.PENDING:
        _set_line_status(line, LineStatus.PROCESSING, label=label, note=payment.status)
        return True
    line.save(update_fields=["stripe_object_id", "stripe_status"])
    return False


def _existing_transfers(
    run: SettlementRun,
) -> dict[tuple[str, str], gateway.TransferInfo] | None:
    """Transfers Stripe already holds for the run, by (line reference, attempt); None when
    Stripe could not list them."""
    try:
        transfers = gateway.transfers_in_group(run.transfer_group)
    except gateway.GatewayError as exc:
        logger.warning("run %s: cannot list its transfers (%s); relying on keys", run.pk, exc)
        return None
    return {
        (
            t.metadata.get("settlement_line_reference", ""),
            t.metadata.get("settlement_attempt", ""),
        ): t
        for t in transfers
    }


def run_execute_lines(*, run_id: int) -> ExecutionResult:
    """Pay and collect every pending line of an executing run, then finish it if nothing is
    left in flight. Safe to run again at any time, also concurrently."""
    result = ExecutionResult(run_id=run_id)
    run = SettlementRun.objects.filter(pk=run_id).first()
    if run is None or run.status != RunStatus.EXECUTING:
        result.status = run.status if run else ""
        return result
    pending = list(
        run.lines.filter(
            status=LineStatus.PENDING, direction__in=[Direction.PAY_OUT, Direction.COLLECT]
        )
        .order_by("id")
        .values_list("id", flat=True)
    )
    existing: dict[tuple[str, str], gateway.TransferInfo] | None = None
    listed = False
    for line_id in pending:
        with transaction.atomic():
            line = (
                SettlementLine.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("run", "partner", "charity")
                .filter(pk=line_id, status=LineStatus.PENDING)
                .first()
            )
            if line is None:
                continue  # done meanwhile, or another executor holds it
            try:
                if line.direction == Direction.PAY_OUT:
                    if not listed and (line.partner or line.charity).stripe_account_id:
                        existing, listed = _existing_transfers(run), True  # once per pass
                    adopted = (existing or {}).get((str(line.reference), str(line.attempt)))
                    _pay_out(line, adopted, transfers_unknown=listed and existing is None)
                else:
                    _collect(line)
            except gateway.TransientError as exc:
                logger.warning("line %s: transient Stripe failure: %s", line.pk, exc)
                result.transient.append((line.pk, exc.message))
                continue
            except gateway.PermanentError as exc:
                _fail(line, exc, label=SYSTEM_EXECUTION)
            {
                LineStatus.PAID: result.paid,
                LineStatus.PROCESSING: result.processing,
                LineStatus.FAILED: result.failed,
            }[line.status].append(line.pk)
    _refresh_processing(run, result)
    with transaction.atomic():
        run = SettlementRun.objects.select_for_update().get(pk=run_id)
        run_finish_if_done(run=run, label=SYSTEM_EXECUTION)
    result.status = run.status
    if result.transient:
        line_id, message = result.transient[0]
        raise gateway.TransientError(
            f"{len(result.transient)} line(s) hit transient Stripe failures "
            f"(line {line_id}: {message}); execution will resume"
        )
    return result


def _refresh_processing(run: SettlementRun, result: ExecutionResult) -> None:
    """Ask Stripe again about collections still processing (their webhook may be lost)."""
    processing = run.lines.filter(status=LineStatus.PROCESSING).values_list("id", flat=True)
    for line_id in list(processing):
        with transaction.atomic():
            line = (
                SettlementLine.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("run", "partner")
                .filter(pk=line_id, status=LineStatus.PROCESSING)
                .first()
            )
            if line is None or not line.stripe_object_id:
                continue
            try:
                payment = gateway.payment_intent_retrieve(line.stripe_object_id)
            except gateway.GatewayError as exc:
                result.transient.append((line.pk, exc.message))
                continue
            apply_payment(line, payment, label=SYSTEM_EXECUTION)


def run_finish_if_done(*, run: SettlementRun, label: str | None, user: Any = None) -> None:
    """Settle the run's status from its lines (the run's row must be locked): completed when
    every line is paid or carried, partially failed while some line is failed."""
    if run.status not in (RunStatus.EXECUTING, RunStatus.COMPLETED, RunStatus.PARTIALLY_FAILED):
        return
    statuses = set(run.lines.values_list("status", flat=True))
    if statuses & {LineStatus.PENDING, LineStatus.PROCESSING}:
        return
    to_status = RunStatus.PARTIALLY_FAILED if LineStatus.FAILED in statuses else RunStatus.COMPLETED
    if to_status == run.status:
        return
    from_status = run.status
    run.status = to_status
    if to_status == RunStatus.COMPLETED:
        run.completed_at = timezone.now()
    run.save(update_fields=["status", "completed_at"])
    record_transition(
        run=run,
        from_status=from_status,
        to_status=to_status,
        user=user,
        label=label if user is None else None,
    )
    if from_status == RunStatus.EXECUTING:
        # Reconcile once the run's end commits (outbox, issue 9: nothing lost to a broker
        # outage; reconciling twice only records a second, identical report).
        celery_task_enqueue("settlement.tasks.reconcile_run", run.pk)
