"""Stripe webhooks: a trigger, never a source of truth (as in pretix's Stripe plugin).

Receiving (the view, fast): the signature is verified over the raw body, the event is
recorded once by its id (a unique key: duplicates and concurrent replays are ignored) and its
processing is queued after the commit.

Processing (a Celery task): the object is fetched again from Stripe and the line moves only
if that move is legal from the line's current state. So events arriving twice, late or out
of order end in the state Stripe holds now.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from charity.models import Charity
from coalition.money import from_stripe_amount
from coalition.outbox import celery_task_enqueue
from partners.models import Partner

from .. import stripe_gateway as gateway
from ..models import ConnectedPayout, SettlementLine, SettlementRun, StripeEvent
from .common import record_transition
from .execution import _fail, _set_line_status, apply_payment, run_finish_if_done
from .runs import run_totals_carry

logger = logging.getLogger(__name__)

LineStatus = SettlementLine.Status

TRANSFER_EVENTS = frozenset({"transfer.created", "transfer.updated", "transfer.reversed"})
PAYMENT_EVENTS = frozenset(
    {
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.processing",
        "payment_intent.canceled",
    }
)
PAYOUT_EVENTS = frozenset(
    {"payout.paid", "payout.failed", "payout.canceled", "payout.updated", "payout.created"}
)
HANDLED_EVENTS = TRANSFER_EVENTS | PAYMENT_EVENTS | PAYOUT_EVENTS
# How a line's history flags money Stripe moved that the line no longer expects.
NEEDS_FINANCE = "NEEDS FINANCE"


def stripe_event_receive(*, event: gateway.WebhookEvent) -> tuple[StripeEvent, bool]:
    """Record a verified event once and queue its processing. Returns (event, is_new)."""
    handled = event.type in HANDLED_EVENTS
    now = timezone.now()
    try:
        with transaction.atomic():
            stored = StripeEvent.objects.create(
                event_id=event.id[:255],
                type=event.type[:128],
                account=event.account[:255],
                object_id=event.object_id[:255],
                created=datetime.fromtimestamp(event.created, tz=UTC) if event.created else None,
                payload=event.payload,
                processed_at=None if handled else now,
                outcome="" if handled else "ignored: not an event settlement handles",
            )
            if handled:
                # Processed after the commit through the outbox (issue 9): recorded with the
                # event, so a broker outage loses nothing, and a failure to process it now
                # does not turn Stripe's delivery into an error (the relay and
                # `process_pending_stripe_events` try again; processing is once per event).
                celery_task_enqueue("settlement.tasks.process_stripe_event", stored.event_id)
    except IntegrityError:
        existing = StripeEvent.objects.get(event_id=event.id)
        if existing.processed_at is None and handled:
            # Delivered again while still unprocessed (its processing failed): try again.
            celery_task_enqueue("settlement.tasks.process_stripe_event", existing.event_id)
        return existing, False
    return stored, True


def stripe_event_process(*, event_id: str) -> str:
    """Apply one recorded event (once): fetch its object from Stripe, then make only the
    legal move. Transient Stripe failures propagate so that the task retries."""
    with transaction.atomic():
        event = StripeEvent.objects.select_for_update().filter(event_id=event_id).first()
        if event is None:
            return "unknown event"
        if event.processed_at is not None:
            return event.outcome
        try:
            with transaction.atomic():
                outcome = _apply(event)
        except gateway.PermanentError as exc:
            # Stripe will never give this object (no such object, not ours to see): retrying
            # would fail the same way, forever, and crowd out the events that can succeed.
            # Its outcome says so, for finance; transient failures still propagate (retried).
            logger.error(
                "Stripe event %s (%s): %s refused for good: %s",
                event.event_id,
                event.type,
                event.object_id,
                exc.message,
            )
            outcome = (
                f"failed for good: Stripe refused {event.object_id or 'its object'} "
                f"({exc.code or 'error'}): {exc.message}"
            )
        event.processed_at = timezone.now()
        event.outcome = outcome[:2000]
        event.save(update_fields=["processed_at", "outcome"])
    return outcome


def _apply(event: StripeEvent) -> str:
    if event.type in TRANSFER_EVENTS:
        return _transfer_changed(event)
    if event.type in PAYMENT_EVENTS:
        return _payment_changed(event)
    if event.type in PAYOUT_EVENTS:
        return _payout_changed(event)
    return "ignored: not an event settlement handles"


def _line_for(stripe_id: str, metadata: dict[str, str]) -> SettlementLine | None:
    """The line a Stripe object belongs to (by its recorded id, else its metadata), locked."""
    lines = SettlementLine.objects.select_for_update(of=("self",)).select_related(
        "run", "partner", "charity"
    )
    query = Q(stripe_object_id=stripe_id)
    reference = metadata.get("settlement_line_reference")
    if reference:
        query |= Q(reference=reference)
    return lines.filter(query).order_by("id").first()


def _finish(line: SettlementLine, label: str) -> None:
    run = SettlementRun.objects.select_for_update().get(pk=line.run_id)
    run_finish_if_done(run=run, label=label)


def _anomaly(line: SettlementLine, label: str, message: str, *, stripe_id: str) -> str:
    """Stripe moved money for a line that no longer expects it (an earlier attempt's, or
    after the line was carried into another run): nothing the webhook may settle by
    itself. Recorded for finance — in the line's history (shown with the run), as an
    error in the log, and the run reconciled again (which reports a second payment of a
    collection, or a second transfer, as a duplicate). Once per line and Stripe object,
    however many events tell of it."""
    flagged = line.transitions.filter(note__startswith=NEEDS_FINANCE, note__contains=stripe_id)
    if flagged.exists():
        return f"needs finance (already recorded): {message}"
    logger.error("settlement line %s: %s", line.pk, message)
    record_transition(
        run=line.run,
        line=line,
        from_status=line.status,
        to_status=line.status,
        label=label,
        note=f"{NEEDS_FINANCE}: {message}",
    )
    celery_task_enqueue("settlement.tasks.reconcile_run", line.run_id)
    return f"needs finance: {message}"


def _paid_after_all(
    line: SettlementLine, *, stripe_id: str, stripe_status: str, label: str, note: str
) -> str:
    """A failed (or not yet re-attempted) line whose money Stripe moved after all, by an
    object of an earlier attempt: the line is paid by it, so that nobody retries or carries
    forward money already moved."""
    before = line.status
    line.stripe_object_id = stripe_id
    line.stripe_status = stripe_status
    _set_line_status(line, LineStatus.PAID, label=label, note=note)
    _finish(line, label)
    return f"line {line.pk}: {before} → paid by {stripe_id} ({note})"


def _carried_line_paid(
    line: SettlementLine, *, direction: str, stripe_id: str, stripe_status: str, label: str
) -> str:
    """Stripe moved the money of a line carried forward. No run took the amount in yet: the
    line is paid after all and its amount leaves the run's carried-forward balance. A run
    took it in already: that run counts it again, which only finance can undo."""
    if line.carried_to_run_id is not None:
        return _anomaly(
            line,
            label,
            f"Stripe moved {stripe_id} ({stripe_status}) for line {line.pk} after it was "
            f"carried forward into run #{line.carried_to_run_id}, which counts the amount "
            f"again: refund or reverse {stripe_id}, or settle run "
            f"#{line.carried_to_run_id}'s line by hand",
            stripe_id=stripe_id,
        )
    if not (line.failure_code or line.failure_reason):
        # Carried when the run was computed, never sent: its amount was never counted as
        # moved, so there is nothing to give back to the run's totals.
        return _anomaly(
            line,
            label,
            f"Stripe moved {stripe_id} ({stripe_status}) for line {line.pk}, which was "
            "carried forward when its run was computed and never sent: settle by hand",
            stripe_id=stripe_id,
        )
    run = SettlementRun.objects.select_for_update().get(pk=line.run_id)
    line.direction = direction
    line.stripe_object_id = stripe_id
    line.stripe_status = stripe_status
    line.hold_reason = ""
    note = f"{stripe_id} {stripe_status} after the line was carried forward (no run took it in)"
    _set_line_status(line, LineStatus.PAID, label=label, note=note)
    run_totals_carry(run=run, line=line, direction=direction, undo=True)
    run_finish_if_done(run=run, label=label)
    logger.warning("settlement line %s: %s", line.pk, note)
    return f"line {line.pk}: carried_forward → paid by {stripe_id}"


def _transfer_changed(event: StripeEvent) -> str:
    transfer = gateway.transfer_retrieve(event.object_id)
    line = _line_for(transfer.id, transfer.metadata)
    if line is None:
        return f"no line for transfer {transfer.id}"
    label = f"stripe:{event.event_id}"[:64]
    attempt = transfer.metadata.get("settlement_attempt", str(line.attempt))
    current_attempt = attempt == str(line.attempt)
    status = "partially_reversed" if transfer.amount_reversed else "paid"
    if not current_attempt and (transfer.reversed or transfer.id == line.stripe_object_id):
        return f"transfer {transfer.id} is of an earlier attempt of line {line.pk}"
    if transfer.reversed:
        if line.status in (LineStatus.PAID, LineStatus.PENDING):
            line.stripe_object_id = transfer.id
            line.stripe_status = "reversed"
            _fail(
                line,
                gateway.PermanentError(
                    f"Transfer {transfer.id} was reversed: the money came back to the platform",
                    code="transfer_reversed",
                ),
                label=label,
            )
            _finish(line, label)
            return f"line {line.pk} failed: transfer reversed"
        return f"line {line.pk} is {line.status}: reversal noted"
    # The transfer is live: the money went out, by this attempt or an earlier one.
    if line.status == LineStatus.CARRIED_FORWARD:
        return _carried_line_paid(
            line,
            direction=SettlementLine.Direction.PAY_OUT,
            stripe_id=transfer.id,
            stripe_status=status,
            label=label,
        )
    if not current_attempt:
        # A live transfer of an earlier attempt: the money went out then.
        if line.status == LineStatus.FAILED or (
            line.status == LineStatus.PENDING and not line.stripe_object_id
        ):
            return _paid_after_all(
                line,
                stripe_id=transfer.id,
                stripe_status=status,
                label=label,
                note=f"transfer {transfer.id} of attempt {attempt}",
            )
        return _anomaly(
            line,
            label,
            f"transfer {transfer.id} of attempt {attempt} is live while line {line.pk} is "
            f"{line.status} (by {line.stripe_object_id or 'nothing'}): paid twice? Reverse "
            "one or settle by hand",
            stripe_id=transfer.id,
        )
    if transfer.amount_reversed:
        line.stripe_status = "partially_reversed"
        line.save(update_fields=["stripe_status"])
        return f"line {line.pk}: transfer {transfer.id} partially reversed"
    if line.status == LineStatus.PENDING:
        # Paid, but the executor crashed before recording it.
        line.stripe_object_id = transfer.id
        line.stripe_status = "paid"
        _set_line_status(line, LineStatus.PAID, label=label, note=transfer.id)
        _finish(line, label)
        return f"line {line.pk} paid by {transfer.id}"
    return f"line {line.pk} is {line.status}: nothing to change"


def _is_current_payment(line: SettlementLine, payment: gateway.PaymentInfo) -> bool:
    """Does this intent speak for the line's current attempt?"""
    if line.stripe_object_id:
        return payment.id == line.stripe_object_id
    return payment.metadata.get("settlement_attempt", str(line.attempt)) == str(line.attempt)


def _payment_changed(event: StripeEvent) -> str:
    payment = gateway.payment_intent_retrieve(event.object_id)
    line = _line_for(payment.id, payment.metadata)
    if line is None:
        return f"no line for payment {payment.id}"
    label = f"stripe:{event.event_id}"[:64]
    attempt = payment.metadata.get("settlement_attempt", "?")
    if payment.succeeded and line.status == LineStatus.CARRIED_FORWARD:
        return _carried_line_paid(
            line,
            direction=SettlementLine.Direction.COLLECT,
            stripe_id=payment.id,
            stripe_status=payment.status,
            label=label,
        )
    if not _is_current_payment(line, payment):
        if not payment.succeeded:
            return (
                f"payment {payment.id} (attempt {attempt}, {payment.status}) is not line "
                f"{line.pk}'s current payment: nothing to change"
            )
        if line.status == LineStatus.FAILED or (
            line.status == LineStatus.PENDING and not line.stripe_object_id
        ):
            note = f"{payment.id} of attempt {attempt} succeeded"
            if line.stripe_object_id:
                note += f" (the line's own {line.stripe_object_id} did not)"
            return _paid_after_all(
                line,
                stripe_id=payment.id,
                stripe_status=payment.status,
                label=label,
                note=note,
            )
        return _anomaly(
            line,
            label,
            f"Stripe collected {payment.id} (attempt {attempt}) for line {line.pk}, which "
            f"is {line.status} by {line.stripe_object_id or 'nothing'}: collected twice? "
            "Refund one or settle by hand",
            stripe_id=payment.id,
        )
    if line.status == LineStatus.CARRIED_FORWARD:
        return f"line {line.pk} is carried forward: payment {payment.status}, nothing to change"
    before = line.status
    if payment.succeeded and line.status == LineStatus.FAILED:
        # Stripe says the line's own payment went through after all: the money is in.
        line.stripe_status = payment.status
        _set_line_status(line, LineStatus.PAID, label=label, note=payment.id)
    else:
        apply_payment(line, payment, label=label)
    if line.status != before:
        _finish(line, label)
        return f"line {line.pk}: {before} → {line.status} ({payment.status})"
    return f"line {line.pk} is {line.status}: payment {payment.status}, nothing to change"


def _payout_changed(event: StripeEvent) -> str:
    if not event.account:
        return "ignored: a payout of the platform itself"
    payout = gateway.payout_retrieve(event.object_id, account=event.account)
    partner = Partner.objects.filter(stripe_account_id=event.account).first()
    charity = None if partner else Charity.objects.filter(stripe_account_id=event.account).first()
    amount = from_stripe_amount(payout.amount, payout.currency)  # exact: no rounding
    ConnectedPayout.objects.update_or_create(
        payout_id=payout.id,
        defaults={
            "stripe_account": event.account,
            "partner": partner,
            "charity": charity,
            "amount": amount,
            "currency": payout.currency,
            "status": payout.status,
            "arrival_date": (
                datetime.fromtimestamp(payout.arrival_date, tz=UTC) if payout.arrival_date else None
            ),
            "failure_code": payout.failure_code,
            "failure_message": payout.failure_message,
            "updated_at": timezone.now(),
        },
    )
    who = f"partner {partner.code}" if partner else (f"charity {charity.pk}" if charity else "?")
    return f"payout {payout.id} of {event.account} ({who}) is {payout.status}"
