"""The API's own tables: staff tokens, and the finance permissions staff are granted."""

from django.conf import settings
from django.db import models
from django.db.models.functions import Now


class StaffToken(models.Model):
    """A staff bearer token (`manage.py create_staff_token`). Only a SHA-256 digest of the
    secret is stored; the secret is printed once."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="coalition_tokens"
    )
    prefix = models.CharField(max_length=16, help_text="The first characters, to recognise it.")
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(db_default=Now())
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "staff API token"

    def __str__(self) -> str:
        return f"{self.user} ({self.prefix}…)"


class FinanceAccess(models.Model):
    """No table: carries the permissions that finance staff hold through the API (granted
    by the `finance` group that `create_staff_token` sets up)."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_members", "Can read members and their history through the API"),
            ("view_finance", "Can read settlement runs and the points liability"),
            ("manage_settlement", "Can create and execute settlement runs"),
            ("approve_settlement", "Can approve settlement runs"),
        ]
