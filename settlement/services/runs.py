"""A run's lifecycle: DRAFT → APPROVED → EXECUTING → COMPLETED or PARTIALLY_FAILED, a draft
discarded, failed lines retried or carried forward. Every transition is logged."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from coalition.outbox import celery_task_enqueue
from coalition.services import programme_get

from ..errors import InvalidInput, InvalidState, NotFound, PermissionDenied
from ..models import SettlementClaim, SettlementLine, SettlementLineComponent, SettlementRun
from .common import APPROVE_SETTLEMENT, record_transition, require_staff
from .computation import compute_run

Status = SettlementRun.Status
LineStatus = SettlementLine.Status


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
    locked = SettlementLine.objects.select_for_update().filter(pk=line_id).first()
    if locked is None:
        raise NotFound("No such settlement line", field="lineId")
    return locked


def line_retry(*, line: SettlementLine, user: Any) -> SettlementLine:
    """Try a failed line again (a new Stripe attempt with a new idempotency key)."""
    require_staff(user, action="retry settlement lines")
    with transaction.atomic():
        run = _lock_run(line.run_id)
        line = _lock_line(line)
        if line.status != LineStatus.FAILED:
            raise InvalidState(f"Only a failed line can be retried; this one is {line.status}")
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
            note=f"retry, attempt {line.attempt}",
        )
        if run.status != Status.EXECUTING:
            _move(run, Status.EXECUTING, user=user, note=f"retry of line #{line.pk}")
            run.save(update_fields=["status"])
        _enqueue_execution(run.pk)
    return line


def line_carry_forward(*, line: SettlementLine, user: Any, reason: str = "") -> SettlementLine:
    """Give up on a failed line for this run: its amount joins the counterparty's next run."""
    require_staff(user, action="carry settlement lines forward")
    from .execution import run_finish_if_done

    with transaction.atomic():
        run = _lock_run(line.run_id)
        line = _lock_line(line)
        if line.status != LineStatus.FAILED:
            raise InvalidState(
                f"Only a failed line can be carried forward; this one is {line.status}"
            )
        line.status = LineStatus.CARRIED_FORWARD
        line.direction = SettlementLine.Direction.CARRY_FORWARD
        line.hold_reason = reason or f"Carried forward after failing: {line.failure_reason}"[:255]
        line.updated_at = timezone.now()
        line.save()
        record_transition(
            run=run,
            line=line,
            from_status=LineStatus.FAILED,
            to_status=LineStatus.CARRIED_FORWARD,
            user=user,
            note=reason,
        )
        run_finish_if_done(run=run, label=None, user=user)
    return line
