"""Settlement's Celery tasks: thin, id-taking, idempotent; only transient Stripe failures are
retried (with exponential backoff)."""

from __future__ import annotations

from celery import shared_task

from . import stripe_gateway as gateway

MAX_RETRIES = 10


def _backoff(retries: int) -> int:
    """5 s, 10 s, 20 s … capped at 10 minutes."""
    return min(5 * 2**retries, 600)


@shared_task(
    bind=True, name="settlement.tasks.execute_run", acks_late=True, max_retries=MAX_RETRIES
)
def execute_run(self, run_id: int) -> str:
    """Pay and collect an executing run's pending lines; resumable at any point."""
    from .services import run_execute_lines

    try:
        return run_execute_lines(run_id=run_id).status
    except gateway.TransientError as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(
    bind=True,
    name="settlement.tasks.process_stripe_event",
    acks_late=True,
    max_retries=MAX_RETRIES,
)
def process_stripe_event(self, event_id: str) -> str:
    """Apply a recorded Stripe webhook event, fetching its object again from Stripe."""
    from .services import stripe_event_process

    try:
        return stripe_event_process(event_id=event_id)
    except gateway.TransientError as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(
    bind=True, name="settlement.tasks.reconcile_run", acks_late=True, max_retries=MAX_RETRIES
)
def reconcile_run(self, run_id: int) -> bool:
    """Compare a run with what Stripe holds (after each execution). Returns whether clean."""
    from .models import SettlementRun
    from .services import run_reconcile

    run = SettlementRun.objects.filter(pk=run_id).first()
    if run is None:
        return False
    try:
        return run_reconcile(run=run).clean
    except gateway.TransientError as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(name="settlement.tasks.announce_statements", acks_late=True)
def announce_statements(run_id: int) -> int:
    """Tell each partner of an approved run that its statement is ready (sent from the
    outbox after the approval commits). Idempotent: each statement is announced once per
    run and partner. Returns how many were announced now."""
    from .services.statements import statements_announce

    return statements_announce(run_id=run_id)


@shared_task(name="settlement.tasks.process_pending_stripe_events")
def process_pending_stripe_events() -> int:
    """Periodic: queue again the recorded webhook events not processed after a minute (a lost
    task, or Stripe unreachable when they came)."""
    from datetime import timedelta

    from django.utils import timezone

    from .models import StripeEvent

    event_ids = list(
        StripeEvent.objects.filter(
            processed_at__isnull=True, received_at__lt=timezone.now() - timedelta(minutes=1)
        )
        .order_by("received_at")
        .values_list("event_id", flat=True)[:500]
    )
    for event_id in event_ids:
        process_stripe_event.delay(event_id)
    return len(event_ids)


@shared_task(name="settlement.tasks.resume_executing_runs")
def resume_executing_runs() -> int:
    """Periodic: queue execution again for runs left executing (a worker died mid-run).
    Executing twice is harmless: lines are locked and Stripe calls idempotent."""
    from .models import SettlementLine, SettlementRun

    run_ids = list(
        SettlementRun.objects.filter(
            status=SettlementRun.Status.EXECUTING,
            lines__status__in=[SettlementLine.Status.PENDING, SettlementLine.Status.PROCESSING],
        )
        .values_list("id", flat=True)
        .distinct()
    )
    for run_id in run_ids:
        execute_run.delay(run_id)
    return len(run_ids)
