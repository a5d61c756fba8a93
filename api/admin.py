"""Staff tokens in the admin: listed and revocable, never shown or edited."""

from django.contrib import admin, messages
from django.utils import timezone

from .models import StaffToken


@admin.register(StaffToken)
class StaffTokenAdmin(admin.ModelAdmin):
    list_display = ["user", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["user__username", "prefix"]
    readonly_fields = ["user", "prefix", "digest", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request, obj=None):
        return False  # tokens come from `manage.py create_staff_token`, shown once

    def has_change_permission(self, request, obj=None):
        return False

    def has_revoke_permission(self, request):
        """Revoking is a change (another staff member's token, a superuser's included): the
        change permission, not just the view permission that lists them."""
        return request.user.has_perm("api.change_stafftoken")

    @admin.action(description="Revoke the selected tokens", permissions=["revoke"])
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"{count} token(s) revoked", messages.SUCCESS)


# Outbound webhook admin lives with the webhooks in partners; registered from here so that
# the brands' admin (partners/admin.py) stays its team's file.
from partners import webhooks_admin  # noqa: E402, F401
