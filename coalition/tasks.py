"""Periodic ledger jobs. Thin: they call services, which are idempotent and lock-safe."""

from celery import shared_task

from . import services


@shared_task(name="coalition.tasks.expire_due_lots")
def expire_due_lots() -> int:
    """Expire due points into breakage (daily). Returns the points expired."""
    return services.points_expire_due()


@shared_task(name="coalition.tasks.expire_due_holds")
def expire_due_holds() -> int:
    """Release holds past their time (every minute). Returns how many expired."""
    return len(services.holds_expire_due())
