"""A run's lifecycle: DRAFT → APPROVED → EXECUTING → COMPLETED or PARTIALLY_FAILED, a draft
discarded, failed lines retried or carried forward. Every transition is logged."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from coalition.outbox import celery_task_enqueue
from coalition.services import programme_get

from .. import stripe_gateway as gateway
from ..errors import InvalidInput, InvalidState, NotFound, PermissionDenied
from ..models import SettlementClaim, SettlementLine, SettlementLineComponent, SettlementRun
from .common import APPROVE_SETTLEMENT, record_transition, require_staff
from .computation import compute_run

Status = SettlementRun.Status
LineStatus = SettlementLine.Status
Direction = SettlementLine.Direction


def _lock_run(run: SettlementRun | int) -> SettlementRun:
    run_id = run.pk if isinstance(run, SettlementRun) else run
    locked = SettlementRun.objects.select_for_update().filter(pk=run_id).first()
    if locked is None:
        raise NotFound("No such settlement run", field="runId")
    return locked


def _move(
    run: SettlementRun,
    to_status: str,
    *,
    user: Any = None,
    label: str | None = None,
    note: str = "",
) -> None:
    from_status = run.status
    run.status = to_status
    record_transition(
        run=run, from_status=from_status, to_status=to_status, user=user, label=label, note=note
    )


def run_create(*, period_end: datetime, created_by: Any) -> SettlementRun:
    """Open a draft run settling every not-yet-settled transaction created before
    `period_end`, with its lines and totals. Only one run may be open at a time."""
    require_staff(created_by, action="create settlement runs")
    if not isinstance(period_end, datetime) or timezone.is_naive(period_end):
        raise InvalidInput("periodEnd must be a date and time with a time zone", field="periodEnd")
    with transaction.atomic():
        open_run = SettlementRun.objects.filter(status__in=SettlementRun.OPEN_STATUSES).first()
        if open_run is not None:
            raise InvalidState(
                f"Run #{open_run.pk} is still {open_run.status}: finish or discard it first",
                field="periodEnd",
            )
        try:
            with transaction.atomic():
                run = SettlementRun.objects.create(
                    period_end=period_end,
                    currency=programme_get().currency,
                    created_by=created_by,
                )
        except IntegrityError as exc:
            # Another run was opened concurrently (the partial unique index said so).
            raise InvalidState("Another settlement run is open", field="periodEnd") from exc
        record_transition(run=run, to_status=Status.DRAFT, user=created_by)
        compute_run(run=run)
    return run


def run_approve(*, run: SettlementRun, approved_by: Any) -> SettlementRun:
    """Approve a draft. The approver must be a staff user other than its creator."""
    require_staff(approved_by, action="approve settlement runs", permission=APPROVE_SETTLEMENT)
    with transaction.atomic():
        run = _lock_run(run)
        if run.status != Status.DRAFT:
            raise InvalidState(f"Only a draft can be approved; run #{run.pk} is {run.status}")
        if run.created_by_id == approved_by.pk:
            raise PermissionDenied(
                "Segregation of duties: a run must be approved by someone other than the "
                "person who created it",
                field="runId",
            )
        run.approved_by = approved_by
        run.approved_at = timezone.now()
        _move(run, Status.APPROVED, user=approved_by)
        run.save(update_fields=["status", "approved_by", "approved_at"])
        # Partners hear that their statements are ready once the approval commits (through
        # the outbox, issue 9: recorded in this transaction, so a broker outage or a crash
        # after the commit loses nothing; the job announces each statement once).
        celery_task_enqueue("settlement.tasks.announce_statements", run.pk)
    return run


def run_discard(*, run: SettlementRun, discarded_by: Any, reason: str = "") -> SettlementRun:
    """Throw a draft away: its transactions and carried amounts return to the pool."""
    require_staff(discarded_by, action="discard settlement runs")
    with transaction.atomic():
        run = _lock_run(run)
        if run.status != Status.DRAFT:
            raise InvalidState(f"Only a draft can be discarded; run #{run.pk} is {run.status}")
        SettlementClaim.objects.filter(run=run).delete()
        SettlementLine.objects.filter(carried_to_run=run).update(carried_to_run=None)
        SettlementLineComponent.objects.filter(line__run=run).delete()
        SettlementLine.objects.filter(run=run).delete()
        _move(run, Status.DISCARDED, user=discarded_by, note=reason)
        run.save(update_fields=["status"])
    return run


def run_execute(*, run: SettlementRun, started_by: Any) -> SettlementRun:
    """Start paying out and collecting an approved run (a Celery task, line by line)."""
    require_staff(started_by, action="execute settlement runs")
    with transaction.atomic():
        run = _lock_run(run)
        if run.status != Status.APPROVED:
            raise InvalidState(
                f"Only an approved run can be executed; run #{run.pk} is {run.status}"
            )
        _move(run, Status.EXECUTING, user=started_by)
        run.save(update_fields=["status"])
        _enqueue_execution(run.pk)
    return run


def _enqueue_execution(run_id: int) -> None:
    """Execute the run once the caller's transaction commits: recorded in the outbox in
    that transaction (issue 9), dispatched by the relay. Executing twice is harmless (lines
    are locked, Stripe calls idempotent); a failure of the job in-process does not undo the
    caller's answer, and the periodic `resume_executing_runs` picks the run up again."""
    celery_task_enqueue("settlement.tasks.execute_run", run_id)


def _lock_line(line: SettlementLine | int) -> SettlementLine:
    line_id = line.pk if isinstance(line, SettlementLine) else line
    locked = (
        SettlementLine.objects.select_for_update(of=("self",))
        .select_related("run", "partner", "charity")
        .filter(pk=line_id)
        .first()
    )
    if locked is None:
        raise NotFound("No such settlement line", field="lineId")
    return locked


# --------------------------------------------------------------------------- what Stripe holds


@dataclass
class _StripeVerdict:
    """What Stripe holds for a failed line's attempts, once nothing of it can still move."""

    paid_by: str = ""  # the Stripe object that moved the line's money after all
    stripe_status: str = ""
    notes: list[str] = field(default_factory=list)


def _line_payments(line: SettlementLine) -> list[gateway.PaymentInfo]:
    """Every PaymentIntent of the line, whatever its attempt: the one it records, and the
    partner's intents that name it (an attempt whose id the line lost)."""
    customer = line.partner.stripe_customer_id if line.partner_id else ""
    found: dict[str, gateway.PaymentInfo] = {}
    if customer:
        for payment in gateway.payment_intents_of_customer(customer):
            if payment.metadata.get("settlement_line_reference") == str(line.reference):
                found[payment.id] = payment
    if line.stripe_object_id.startswith("pi_") and line.stripe_object_id not in found:
        found[line.stripe_object_id] = gateway.payment_intent_retrieve(line.stripe_object_id)
    return list(found.values())


def _line_transfers(line: SettlementLine) -> list[gateway.TransferInfo]:
    """Every transfer of the line, whatever its attempt (the run's transfer group holds
    them all), and the one it records."""
    account = (line.partner or line.charity).stripe_account_id
    if not account and not line.stripe_object_id and line.attempt == 1:
        return []  # nothing of this line ever reached Stripe
    found = {
        transfer.id: transfer
        for transfer in gateway.transfers_in_group(line.run.transfer_group)
        if transfer.metadata.get("settlement_line_reference") == str(line.reference)
    }
    if line.stripe_object_id.startswith("tr_") and line.stripe_object_id not in found:
        found[line.stripe_object_id] = gateway.transfer_retrieve(line.stripe_object_id)
    return list(found.values())


def _cancel_payment(line: SettlementLine, payment: gateway.PaymentInfo) -> gateway.PaymentInfo:
    """Cancel one of the line's intents so that it can never collect. Safe to repeat: the
    idempotency key is the line's attempt and the intent; if Stripe refuses because the
    intent moved meanwhile (the partner just authenticated), it is read again."""
    try:
        return gateway.payment_intent_cancel(
            payment.id, idempotency_key=f"{line.idempotency_key}-cancel-{payment.id}"
        )
    except gateway.PermanentError:
        return gateway.payment_intent_retrieve(payment.id)


def _settle_payments(line: SettlementLine, action: str) -> _StripeVerdict:
    payments = _line_payments(line)
    verdict = _StripeVerdict()
    succeeded = [payment for payment in payments if payment.succeeded]
    processing = [payment for payment in payments if payment.processing]
    if processing and not succeeded:
        # Checked before anything is cancelled: a refusal changes nothing, here or at Stripe.
        raise InvalidState(
            f"Stripe is still processing payment {processing[0].id} of this line: it may "
            f"yet collect the money. Wait for its outcome before you {action} the line",
            field="lineId",
        )
    for payment in [payment for payment in payments if payment.cancellable]:
        payment = _cancel_payment(line, payment)
        if payment.succeeded:
            succeeded.append(payment)
        elif payment.processing:
            processing.append(payment)
        elif payment.status == "canceled":
            verdict.notes.append(f"cancelled {payment.id} at Stripe")
        else:
            raise InvalidState(
                f"Stripe would not cancel payment {payment.id} of this line (it is "
                f"{payment.status}): try again",
                field="lineId",
            )
    if not succeeded:
        if processing:
            raise InvalidState(
                f"Stripe is now processing payment {processing[0].id} of this line: wait "
                f"for its outcome before you {action} the line",
                field="lineId",
            )
        return verdict
    # The money is in after all (a 3-D Secure completed late, say): the line is paid.
    own = [payment for payment in succeeded if payment.id == line.stripe_object_id]
    paid_by = (own or succeeded)[0]
    verdict.paid_by, verdict.stripe_status = paid_by.id, paid_by.status
    verdict.notes.insert(
        0, f"Stripe collected {paid_by.id}: the line is paid (asked to {action} it)"
    )
    others = [payment.id for payment in succeeded + processing if payment.id != paid_by.id]
    if others:
        verdict.notes.append(
            f"{', '.join(others)} also succeeded or may: collected more than once? "
            "(see the run's reconciliation)"
        )
    return verdict


def _settle_transfers(line: SettlementLine, action: str) -> _StripeVerdict:
    live = [transfer for transfer in _line_transfers(line) if not transfer.reversed]
    if not live:
        return _StripeVerdict()  # nothing sent, or all of it came back
    own = [transfer for transfer in live if transfer.id == line.stripe_object_id]
    paid_by = (own or live)[0]
    verdict = _StripeVerdict(
        paid_by=paid_by.id,
        stripe_status="partially_reversed" if paid_by.amount_reversed else "paid",
        notes=[f"Stripe holds transfer {paid_by.id}: the line is paid (asked to {action} it)"],
    )
    if len(live) > 1:
        verdict.notes.append(
            f"{len(live)} live transfers: paid more than once? (see the run's reconciliation)"
        )
    return verdict


def _settle_at_stripe(line: SettlementLine, *, action: str) -> _StripeVerdict:
    """Before a failed line is tried again or carried forward, make sure none of its
    earlier Stripe attempts can still move money: a payment that succeeded (3-D Secure
    completed late) or a transfer that exists means the line is paid; one still processing
    refuses the action; one that can still succeed is cancelled at Stripe first.

    Stripe being unreachable refuses the action (`INVALID_STATE`), nothing changed."""
    try:
        if line.direction == Direction.COLLECT:
            return _settle_payments(line, action)
        if line.direction == Direction.PAY_OUT:
            return _settle_transfers(line, action)
    except gateway.GatewayError as exc:
        raise InvalidState(
            f"Stripe could not be asked about this line's earlier attempts ({exc.message}): "
            "nothing was changed; try again",
            field="lineId",
        ) from exc
    return _StripeVerdict()


def _paid_after_all(
    *, run: SettlementRun, line: SettlementLine, verdict: _StripeVerdict, user: Any
) -> SettlementLine:
    from .execution import _set_line_status, run_finish_if_done

    line.stripe_object_id = verdict.paid_by
    line.stripe_status = verdict.stripe_status
    _set_line_status(line, LineStatus.PAID, label=None, user=user, note="; ".join(verdict.notes))
    run_finish_if_done(run=run, label=None, user=user)
    return line


# --------------------------------------------------------------------------- retry, carry


def line_retry(*, line: SettlementLine, user: Any) -> SettlementLine:
    """Try a failed line again (a new Stripe attempt with a new idempotency key), once no
    earlier attempt can still move its money: a line Stripe paid after all is marked paid
    (and returned so) instead; a payment still processing refuses the retry."""
    require_staff(user, action="retry settlement lines")
    with transaction.atomic():
        # The line first, then its run: the order the webhooks lock them in.
        line = _lock_line(line)
        if line.status != LineStatus.FAILED:
            raise InvalidState(f"Only a failed line can be retried; this one is {line.status}")
        verdict = _settle_at_stripe(line, action="retry")
        run = _lock_run(line.run_id)
        if verdict.paid_by:
            return _paid_after_all(run=run, line=line, verdict=verdict, user=user)
        line.attempt += 1
        line.stripe_object_id = ""
        line.stripe_status = ""
        line.status = LineStatus.PENDING
        line.updated_at = timezone.now()
        line.save()
        record_transition(
            run=run,
            line=line,
            from_status=LineStatus.FAILED,
            to_status=LineStatus.PENDING,
            user=user,
            note="; ".join([f"retry, attempt {line.attempt}", *verdict.notes]),
        )
        if run.status != Status.EXECUTING:
            _move(run, Status.EXECUTING, user=user, note=f"retry of line #{line.pk}")
            run.save(update_fields=["status"])
        _enqueue_execution(run.pk)
    return line


def line_carry_forward(*, line: SettlementLine, user: Any, reason: str = "") -> SettlementLine:
    """Give up on a failed line for this run: its amount joins the counterparty's next run
    and leaves this run's pay-outs or collections for its carried-forward balance. As for a
    retry, earlier Stripe attempts are settled first (a line paid after all is marked paid)."""
    require_staff(user, action="carry settlement lines forward")
    from .execution import run_finish_if_done

    with transaction.atomic():
        line = _lock_line(line)
        if line.status != LineStatus.FAILED:
            raise InvalidState(
                f"Only a failed line can be carried forward; this one is {line.status}"
            )
        verdict = _settle_at_stripe(line, action="carry forward")
        run = _lock_run(line.run_id)
        if verdict.paid_by:
            return _paid_after_all(run=run, line=line, verdict=verdict, user=user)
        direction = line.direction
        line.status = LineStatus.CARRIED_FORWARD
        line.direction = Direction.CARRY_FORWARD
        line.hold_reason = reason or f"Carried forward after failing: {line.failure_reason}"[:255]
        line.updated_at = timezone.now()
        line.save()
        run_totals_carry(run=run, line=line, direction=direction)
        record_transition(
            run=run,
            line=line,
            from_status=LineStatus.FAILED,
            to_status=LineStatus.CARRIED_FORWARD,
            user=user,
            note="; ".join(note for note in [reason, *verdict.notes] if note),
        )
        run_finish_if_done(run=run, label=None, user=user)
    return line


def run_totals_carry(
    *, run: SettlementRun, line: SettlementLine, direction: str, undo: bool = False
) -> None:
    """Move a line's amount from the run's pay-outs (or collections) to its carried-forward
    balance, or back (`undo`: a carried line Stripe paid after all, before any run took
    it in). The run's row must be locked.

    The run's identity  collected - paid out == revenue + float_end - float_start  holds
    either way (both sides move by the line's net), and the next run's carried_in and
    float_start take exactly what this run's carried_forward and float_end leave."""
    net = -line.net_amount if undo else line.net_amount
    if direction == Direction.PAY_OUT:
        run.total_paid_out -= net
    elif direction == Direction.COLLECT:
        run.total_collected += net  # a collection's net is negative
    else:
        return  # already counted as carried when the run was computed
    run.carried_forward += net
    run.float_end += net
    if run.total_collected - run.total_paid_out != run.operator_revenue + run.float_change:
        raise AssertionError(f"run {run.pk}: the totals do not tie")  # a programming error
    run.save(update_fields=["total_paid_out", "total_collected", "carried_forward", "float_end"])
