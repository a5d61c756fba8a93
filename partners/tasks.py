"""Periodic partner-programme jobs."""

from celery import shared_task


@shared_task(name="partners.tasks.grant_birthday_bonuses")
def grant_birthday_bonuses() -> int:
    """Daily: the programme's birthday bonus to members born on this day (once a year)."""
    from .services import birthday_bonuses_grant

    return birthday_bonuses_grant()
