"""Periodic partner-programme jobs."""

from celery import shared_task


@shared_task(name="partners.tasks.grant_birthday_bonuses")
def grant_birthday_bonuses() -> int:
    """Daily: the programme's birthday bonus to members born on this day (once a year)."""
    from .services import birthday_bonuses_grant

    return birthday_bonuses_grant()


# --------------------------------------------------------------------------- webhooks


@shared_task(name="partners.tasks.deliver_webhook_event")
def deliver_webhook_event(event_id: int) -> int:
    """First delivery of a recorded event to the partner's endpoints (after its commit)."""
    from .webhooks import event_deliver

    return len(event_deliver(event_id=event_id))


@shared_task(name="partners.tasks.retry_webhook_deliveries")
def retry_webhook_deliveries() -> int:
    """Every minute: retry failed deliveries whose backoff has elapsed. Runs may overlap:
    each retry is leased before it is posted, and a run stops after
    `webhooks.RETRY_SWEEP_BUDGET` (well inside the task time limit); the rest waits for the
    next run, and a retry a killed run had taken is due again when its lease ends."""
    from .webhooks import deliveries_retry_due

    return deliveries_retry_due()


@shared_task(name="partners.tasks.sweep_webhook_domain_events")
def sweep_webhook_domain_events() -> int:
    """Every minute: record hold.expired and member.tier_changed events."""
    from .webhooks import domain_events_sweep

    return domain_events_sweep()


# --------------------------------------------------------------------------- purchase files

from django.db import InterfaceError, OperationalError  # noqa: E402 (issue 8: appended)

# Retried: the file share, the database (partners.imports.TRANSIENT_ERRORS, the same).
IMPORT_TRANSIENT_ERRORS = (OSError, OperationalError, InterfaceError)


@shared_task(
    bind=True,
    name="partners.tasks.import_purchases_chunk",
    autoretry_for=IMPORT_TRANSIENT_ERRORS,
    retry_backoff=True,
    max_retries=5,
)
def import_purchases_chunk(self, import_id: int, start_row: int, count: int) -> dict:
    """Record one chunk of a purchase file (issue 8). Idempotent: every row has its own
    idempotency key and the chunk is counted once. Deadlocks are retried inside.

    Any other error fails the import at once (`import_chunk_process`); a transient one
    does when it outlasts the retries, so an import is never left running for ever."""
    from .imports import chunk_failure_reason, import_chunk_process, purchase_import_fail

    try:
        result = import_chunk_process(import_id=import_id, start_row=start_row, count=count)
    except IMPORT_TRANSIENT_ERRORS as exc:
        if self.request.retries >= self.max_retries:
            purchase_import_fail(
                import_id=import_id, reason=chunk_failure_reason(start_row, count, exc)
            )
        raise
    return {"accepted": result.accepted, "rejected": result.rejected, "counted": result.counted}
