"""Charity jobs. Thin: they call services, which are idempotent and lock-safe."""

from smtplib import SMTPException

from celery import shared_task


@shared_task(name="charity.tasks.expire_with_giving")
def expire_with_giving() -> dict:
    """Daily, in place of the bare expiry sweep: first give opted-in members' due points to
    the charity they chose, then expire what is left into breakage."""
    from coalition.services import points_expire_due

    from .services import expiring_points_donate

    given = expiring_points_donate()
    expired = points_expire_due()
    return {"given": given, "expired": expired}


@shared_task(
    name="charity.tasks.email_receipt",
    acks_late=True,
    # A mail server that does not answer is transient: try again later, the row lock and
    # `receipt_emailed_at` keep it to one mail.
    autoretry_for=(OSError, SMTPException),
    retry_backoff=5,
    retry_backoff_max=600,
    max_retries=10,
)
def email_receipt(donation_id: int) -> bool:
    """Send the member the receipt of a donation they made, once (by id; a missing one is
    ignored). Returns whether a mail was sent now.

    Dispatched from the outbox, at least once: the donation row is locked while the mail is
    sent and `receipt_emailed_at` is set in the same transaction, so a second run (a relay
    retry, a redelivered task) finds it sent and sends nothing. An erased member (issue 9)
    gets no mail."""
    from django.core.mail import send_mail
    from django.db import transaction
    from django.utils import timezone

    from coalition.money import round_money

    from .models import Donation

    with transaction.atomic():
        donation = (
            Donation.objects.select_for_update(of=("self",))
            .select_related("member", "charity")
            .filter(pk=donation_id)
            .first()
        )
        if donation is None or donation.receipt_emailed_at is not None:
            return False
        email = donation.member.email
        if not email or email.endswith("@invalid"):
            return False
        send_mail(
            subject=f"Your donation receipt {donation.receipt_number}",
            message=(
                f"Hello {donation.member.display_name},\n\n"
                f"thank you for giving {donation.points} points "
                f"({round_money(donation.value, donation.currency)} {donation.currency}) "
                f"to {donation.charity.name} "
                f"(registration {donation.charity.registration_number}).\n"
                f"Receipt number: {donation.receipt_number}\n"
                f"Your receipt: /charity/receipts/{donation.receipt_number}/"
            ),
            from_email=None,
            recipient_list=[email],
        )
        Donation.objects.filter(pk=donation.pk).update(receipt_emailed_at=timezone.now())
    return True
