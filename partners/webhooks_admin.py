"""Admin for outbound webhooks: endpoints (disable), events with every delivery attempt,
and manual redelivery. Registered from api/admin.py (partners/admin.py is the brands' admin).
"""

from django.contrib import admin, messages

from .models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from .webhooks import endpoint_disable, event_redeliver


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnly):
    list_display = ["partner", "url", "created_at", "disabled_at"]
    list_filter = ["disabled_at", "partner"]
    # The secret is never shown again: the partner got it once, at registration.
    fields = ["partner", "url", "created_at", "disabled_at"]
    readonly_fields = fields
    actions = ["disable"]

    def has_disable_permission(self, request):
        return request.user.has_perm("partners.change_webhookendpoint")

    @admin.action(description="Disable the selected endpoints", permissions=["disable"])
    def disable(self, request, queryset):
        for endpoint in queryset:
            endpoint_disable(endpoint=endpoint)
        self.message_user(request, f"{queryset.count()} endpoint(s) disabled", messages.SUCCESS)


class DeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    fields = [
        "attempt",
        "endpoint",
        "attempted_at",
        "status_code",
        "error",
        "delivered_at",
        "next_attempt_at",
    ]
    readonly_fields = fields
    ordering = ["attempt", "id"]
    extra = 0
    max_num = 0
    can_delete = False


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnly):
    list_display = ["partner", "sequence", "type", "created_at", "delivered"]
    list_filter = ["type", "partner"]
    fields = ["partner", "sequence", "type", "created_at", "dedup_key", "payload"]
    readonly_fields = fields
    inlines = [DeliveryInline]
    actions = ["redeliver"]

    @admin.display(boolean=True)
    def delivered(self, event):
        return event.deliveries.filter(delivered_at__isnull=False).exists()

    def has_redeliver_permission(self, request):
        return request.user.has_perm("partners.change_webhookevent")

    @admin.action(description="Redeliver the selected events now", permissions=["redeliver"])
    def redeliver(self, request, queryset):
        delivered = failed = 0
        for event in queryset.order_by("partner", "sequence"):
            for delivery in event_redeliver(event=event):
                if delivery.delivered_at:
                    delivered += 1
                else:
                    failed += 1
        self.message_user(
            request,
            f"{delivered} delivered, {failed} failed (failures are retried automatically)",
            messages.SUCCESS if not failed else messages.WARNING,
        )


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnly):
    list_display = [
        "event",
        "endpoint",
        "attempt",
        "attempted_at",
        "status_code",
        "delivered_at",
        "next_attempt_at",
    ]
    list_filter = ["delivered_at"]
