"""Partner brands: the coalition's customers, who issue points and take them back."""

from decimal import Decimal

from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models.functions import Now


class Partner(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    code = models.CharField(
        max_length=32,
        unique=True,
        validators=[
            RegexValidator(r"^[A-Z0-9][A-Z0-9_-]*$", "Upper-case letters, digits, - and _")
        ],
    )
    name = models.CharField(max_length=200)
    currency = models.CharField(max_length=3, validators=[RegexValidator(r"^[A-Z]{3}$")])
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    earn_rate = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        default=Decimal("1"),
        validators=[MinValueValidator(Decimal("0"))],
        help_text="Base points per currency unit spent.",
    )
    stripe_account_id = models.CharField(max_length=255, blank=True, default="")
    stripe_customer_id = models.CharField(max_length=255, blank=True, default="")
    contact_email = models.EmailField(blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(earn_rate__gte=0), name="partner_earn_rate_gte_0"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.code} {self.name}"

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE
