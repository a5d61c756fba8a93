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
    """Every minute: retry failed deliveries whose backoff has elapsed."""
    from .webhooks import deliveries_retry_due

    return deliveries_retry_due()


@shared_task(name="partners.tasks.sweep_webhook_domain_events")
def sweep_webhook_domain_events() -> int:
    """Every minute: record hold.expired and member.tier_changed events."""
    from .webhooks import domain_events_sweep

    return domain_events_sweep()


# --------------------------------------------------------------------------- purchase files

from django.db import InterfaceError, OperationalError  # noqa: E402 (issue 8: appended)


@shared_task(
    name="partners.tasks.import_purchases_chunk",
    autoretry_for=(OSError, OperationalError, InterfaceError),  # file share, database
    retry_backoff=True,
    max_retries=5,
)
def import_purchases_chunk(import_id: int, start_row: int, count: int) -> dict:
    """Record one chunk of a purchase file (issue 8). Idempotent: every row has its own
    idempotency key and the chunk is counted once. Deadlocks are retried inside."""
    from .imports import import_chunk_process

    result = import_chunk_process(import_id=import_id, start_row=start_row, count=count)
    return {"accepted": result.accepted, "rejected": result.rejected, "counted": result.counted}
