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
from .execution import _fail, _set_line_status, apply_payment, run_finish_if_done

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
        if event.type in TRANSFER_EVENTS:
            outcome = _transfer_changed(event)
        elif event.type in PAYMENT_EVENTS:
            outcome = _payment_changed(event)
        elif event.type in PAYOUT_EVENTS:
            outcome = _payout_changed(event)
        else:
            outcome = "ignored: not an event settlement handles"
        event.processed_at = timezone.now()
        event.outcome = outcome[:2000]
        event.save(update_fields=["processed_at", "outcome"])
    return outcome


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


def _transfer_changed(event: StripeEvent) -> str:
    transfer = gateway.transfer_retrieve(event.object_id)
    line = _line_for(transfer.id, transfer.metadata)
    if line is None:
        return f"no line for transfer {transfer.id}"
    label = f"stripe:{event.event_id}"[:64]
    current_attempt = transfer.metadata.get("settlement_attempt", str(line.attempt)) == str(
        line.attempt
    )
    if not current_attempt:
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


def _payment_changed(event: StripeEvent) -> str:
    payment = gateway.payment_intent_retrieve(event.object_id)
    line = _line_for(payment.id, payment.metadata)
    if line is None:
        return f"no line for payment {payment.id}"
    if line.stripe_object_id and line.stripe_object_id != payment.id:
        return f"payment {payment.id} is not line {line.pk}'s current payment"
    label = f"stripe:{event.event_id}"[:64]
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
