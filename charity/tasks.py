"""Charity jobs. Thin: they call services, which are idempotent and lock-safe."""

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


@shared_task(name="charity.tasks.email_receipt")
def email_receipt(donation_id: int) -> bool:
    """Send the member the receipt of a donation they made (by id; a missing one is ignored)."""
    from django.core.mail import send_mail

    from coalition.money import round_money

    from .models import Donation

    donation = Donation.objects.select_related("member", "charity").filter(pk=donation_id).first()
    if donation is None or not donation.member.email:
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
        recipient_list=[donation.member.email],
    )
    return True
