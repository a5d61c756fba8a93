"""Admin for the audit trail and the outbox (issue 9): both read-only. Registered from
CoalitionConfig.ready (after every app's admin module is loaded)."""

from django.contrib import admin

from .models import AuditEvent, OutboxMessage


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AuditEventAdmin(_ReadOnly):
    list_display = ["created_at", "actor_label", "action", "object_type", "object_id"]
    list_filter = ["action", "object_type"]
    search_fields = ["=object_id", "actor_label", "action"]
    date_hierarchy = "created_at"
    fields = [
        "created_at",
        "actor",
        "actor_label",
        "action",
        "object_type",
        "object_id",
        "before",
        "after",
    ]
    readonly_fields = fields


class OutboxMessageAdmin(_ReadOnly):
    list_display = ["id", "topic", "created_at", "dispatched_at", "attempts", "last_error"]
    list_filter = ["topic", ("dispatched_at", admin.EmptyFieldListFilter)]
    fields = [
        "topic",
        "payload",
        "created_at",
        "dispatched_at",
        "attempts",
        "next_attempt_at",
        "last_error",
    ]
    readonly_fields = fields


def register(site=None) -> None:
    site = site or admin.site
    for model, model_admin in ((AuditEvent, AuditEventAdmin), (OutboxMessage, OutboxMessageAdmin)):
        if not site.is_registered(model):
            site.register(model, model_admin)
