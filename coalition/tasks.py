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


@shared_task(name="coalition.tasks.recalculate_tiers")
def recalculate_tiers(now: str | None = None, after_member_id: int = 0) -> dict:
    """Nightly: mark members below their tier, downgrade them after the grace period.

    Beat starts it with no arguments. A run does what fits in its time budget and enqueues
    the next from its last member id with the night's moment (ISO 8601), so the night goes
    on across runs; a run sent twice does the same members again, which changes nothing."""
    from datetime import datetime

    from django.utils import timezone

    from .services import tiers

    moment = datetime.fromisoformat(now) if now else timezone.now()
    run = tiers.tiers_recalculate_chunks(
        now=moment, after_member_id=after_member_id, budget=tiers.RECALCULATION_BUDGET
    )
    return {**run.counts, "resume_after": run.resume_after}


@shared_task(name="coalition.tasks.notify_tier_change")
def notify_tier_change(tier_change_id: int) -> bool:
    """Tell the member about a new tier, once (email backend from settings). Returns whether
    a mail was sent now.

    Dispatched from the outbox, at least once: the change is locked while the mail is sent and
    `notified_at` is set in the same transaction, so a relay retry or a redelivered task finds
    it done. An erased member (issue 9) gets no mail."""
    from django.core.mail import send_mail
    from django.db import transaction
    from django.utils import timezone

    from .models import TierChange

    with transaction.atomic():
        change = (
            TierChange.objects.select_for_update(of=("self",))
            .select_related("member", "to_tier")
            .filter(pk=tier_change_id)
            .first()
        )
        if change is None or change.notified_at is not None:
            return False
        email = change.member.email
        if not email or email.endswith("@invalid"):
            return False
        direction = "up" if change.reason == "earn" else "now"
        send_mail(
            subject=f"Your tier is {direction} {change.to_tier.name}",
            message=(
                f"Hello {change.member.display_name},\n\nyour tier is now {change.to_tier.name} "
                f"({change.qualifying_points} qualifying points in the last 12 months)."
            ),
            from_email=None,
            recipient_list=[email],
        )
        TierChange.objects.filter(pk=change.pk).update(notified_at=timezone.now())
    return True


# --------------------------------------------------------------------------- outbox (issue 9)


@shared_task(name="coalition.tasks.relay_outbox", ignore_result=True)
def relay_outbox() -> int:
    """Every few seconds, and nudged after each commit that recorded follow-up work:
    dispatch the outbox (coalition/outbox.py). Returns how many rows were dispatched."""
    from .outbox import outbox_relay

    return outbox_relay()


@shared_task(name="coalition.tasks.purge_outbox")
def purge_outbox() -> int:
    """Daily: forget outbox rows dispatched more than a week ago."""
    from .outbox import outbox_purge

    return outbox_purge()


# --------------------------------------------------------------------------- expiry notices


@shared_task(
    name="coalition.tasks.send_expiry_notices",
    acks_late=True,
    # A mail server that does not answer is transient (smtplib's errors are OSErrors): try
    # again later; the notice's row lock and `sent_at` keep it to one mail.
    autoretry_for=(OSError,),
    retry_backoff=5,
    retry_backoff_max=600,
    max_retries=10,
)
def send_expiry_notices(notice_ids: list[int] | None = None) -> dict | int:
    """Daily, from beat (no arguments): record a notice for each member and date on which
    points expire within COALITION["EXPIRY_NOTICE_DAYS"], and schedule the mail of those not
    sent yet through the outbox; returns {"members", "notices"}. From the outbox (the
    notices' ids): send those mails, once each; returns how many were sent now."""
    from .notifications import expiry_notices_mail, expiry_notices_schedule

    if notice_ids is None:
        return expiry_notices_schedule()
    return expiry_notices_mail(notice_ids=notice_ids)
