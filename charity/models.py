"""Nonprofits that members give their points to."""

from django.db import models
from django.db.models.functions import Now


class Charity(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending verification"
        VERIFIED = "verified", "Verified"
        SUSPENDED = "suspended", "Suspended"

    name = models.CharField(max_length=200)
    registration_number = models.CharField(max_length=64)
    country = models.CharField(max_length=2, default="US")
    cause = models.CharField(max_length=64)
    description = models.TextField(blank=True, default="")
    website = models.URLField(blank=True, default="")
    stripe_account_id = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        verbose_name_plural = "charities"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["country", "registration_number"], name="charity_registration_unique"
            ),
        ]

    def __str__(self) -> str:
        return self.name
