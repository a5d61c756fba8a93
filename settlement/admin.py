"""Finance admin for settlement runs. Figures are read-only: every change is a service call
(create, approve, execute, discard, reconcile, retry or carry forward a failed line), so the
admin obeys the same rules as the API — segregation of duties included."""

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from . import services
from .errors import CoalitionError
from .models import (
    ConnectedPayout,
    Reconciliation,
    SettlementLine,
    SettlementRun,
    SettlementTransition,
    StripeEvent,
)
from .stripe_gateway import GatewayError


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    max_num = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class LineInline(ReadOnlyInline):
    model = SettlementLine
    fk_name = "run"
    fields = [
        "counterparty_name",
        "issued_points",
        "redeemed_points",
        "matched_points",
        "donated_points",
        "exact_amount",
        "carried_in_amount",
        "net_amount",
        "direction",
        "status",
        "stripe_object_id",
        "failure_reason",
        "statement",
    ]
    readonly_fields = fields
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("partner", "charity")

    @admin.display(description="counterparty")
    def counterparty_name(self, line):
        return line.counterparty_label

    @admin.display(description="statement")
    def statement(self, line):
        return _statement_link(line)


def _statement_link(line: SettlementLine) -> str:
    if line.partner_id:
        url = reverse(
            "settlement-partner-statement",
            kwargs={"run_id": line.run_id, "partner_id": line.partner_id},
        )
    else:
        url = reverse(
            "settlement-charity-statement",
            kwargs={"run_id": line.run_id, "charity_id": line.charity_id},
        )
    return format_html('<a href="{}">CSV</a>', url)


class TransitionInline(ReadOnlyInline):
    model = SettlementTransition
    fields = ["created_at", "line", "from_status", "to_status", "actor_label", "note"]
    readonly_fields = fields
    ordering = ["created_at", "id"]


class ReconciliationInline(ReadOnlyInline):
    model = Reconciliation
    fields = ["created_at", "clean", "checked_lines", "stripe_objects", "difference_list"]
    readonly_fields = fields
    ordering = ["-created_at", "-id"]

    @admin.display(description="differences")
    def difference_list(self, reconciliation):
        if reconciliation.clean:
            return "Clean: Stripe holds exactly what the lines say."
        return format_html_join(
            "",
            "<div><b>{}</b>: {} (line {}, {})</div>",
            (
                (d["kind"], d["message"], d["line"], d["stripe_id"])
                for d in reconciliation.differences
            ),
        )


class RunAddForm(forms.ModelForm):
    class Meta:
        model = SettlementRun
        fields = ["period_end"]


class FinancePermissions:
    """Admin actions that move money need the API's finance permissions, not just staff
    status (a view-only admin user sees the runs, and cannot act on them)."""

    def has_manage_settlement_permission(self, request) -> bool:
        return request.user.has_perm(services.MANAGE_SETTLEMENT)

    def has_approve_settlement_permission(self, request) -> bool:
        return request.user.has_perm(services.APPROVE_SETTLEMENT)


@admin.register(SettlementRun)
class SettlementRunAdmin(FinancePermissions, admin.ModelAdmin):
    list_display = [
        "id",
        "status",
        "period_end",
        "total_paid_out",
        "total_collected",
        "carried_forward",
        "operator_revenue",
        "reconciled",
        "created_by",
        "approved_by",
    ]
    list_filter = ["status"]
    inlines = [LineInline, TransitionInline, ReconciliationInline]
    actions = ["approve", "execute", "discard", "reconcile"]
    readonly_fields = [
        "status", "period_end", "currency", "created_by", "created_at", "approved_by",
        "approved_at", "completed_at", "claimed_transactions", "issued_points",
        "operator_funded_points", "redeemed_points", "donated_points", "matched_points",
        "expired_points", "outstanding_points_start", "outstanding_points_end",
        "issuance_amount", "match_amount", "redemption_amount", "donation_amount",
        "carrying_price", "total_paid_out", "total_collected", "carried_in", "carried_forward",
        "spread_revenue", "match_revenue", "breakage_revenue", "rounding_revenue",
        "operator_revenue", "points_float_start", "points_float_end", "float_start",
        "float_end", "transfer_group", "lines_export",
    ]  # fmt: skip

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = RunAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else []

    def get_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else ["period_end"]

    def get_inline_instances(self, request, obj=None):
        return super().get_inline_instances(request, obj) if obj is not None else []

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # figures never change by hand: actions call the services

    def save_model(self, request, obj, form, change):
        if change:
            return
        try:
            run = services.run_create(period_end=obj.period_end, created_by=request.user)
        except CoalitionError as error:
            self.message_user(request, error.message, messages.ERROR)
            raise _AdminRefusal() from error
        obj.__dict__.update(run.__dict__)

    def add_view(self, request, form_url="", extra_context=None):
        try:
            return super().add_view(request, form_url, extra_context)
        except _AdminRefusal:
            from django.shortcuts import redirect

            return redirect("admin:settlement_settlementrun_changelist")

    @admin.display(description="reconciliation")
    def reconciled(self, run):
        latest = run.reconciliations.order_by("-created_at", "-id").first()
        if latest is None:
            return "—"
        return "clean" if latest.clean else f"{len(latest.differences)} difference(s)"

    @admin.display(description="export")
    def lines_export(self, run):
        url = reverse("settlement-lines", kwargs={"run_id": run.pk})
        return format_html('<a href="{}">All lines (CSV)</a>', url)

    def _each(self, request, queryset, action, done: str):
        for run in queryset:
            try:
                action(run)
            except (CoalitionError, GatewayError) as error:
                self.message_user(request, f"Run #{run.pk}: {error.message}", messages.ERROR)
            else:
                self.message_user(request, f"Run #{run.pk} {done}.", messages.SUCCESS)

    @admin.action(
        description="Approve (needs a second staff member)", permissions=["approve_settlement"]
    )
    def approve(self, request, queryset):
        self._each(
            request,
            queryset,
            lambda run: services.run_approve(run=run, approved_by=request.user),
            "approved",
        )

    @admin.action(description="Execute through Stripe", permissions=["manage_settlement"])
    def execute(self, request, queryset):
        self._each(
            request,
            queryset,
            lambda run: services.run_execute(run=run, started_by=request.user),
            "is executing",
        )

    @admin.action(
        description="Discard the draft (its transactions return to the pool)",
        permissions=["manage_settlement"],
    )
    def discard(self, request, queryset):
        self._each(
            request,
            queryset,
            lambda run: services.run_discard(run=run, discarded_by=request.user),
            "discarded",
        )

    @admin.action(description="Reconcile with Stripe", permissions=["manage_settlement"])
    def reconcile(self, request, queryset):
        self._each(request, queryset, lambda run: services.run_reconcile(run=run), "reconciled")


class _AdminRefusal(Exception):
    """A service refused an admin form; the message was shown to the user."""


@admin.register(SettlementLine)
class SettlementLineAdmin(FinancePermissions, admin.ModelAdmin):
    list_display = ["id", "run", "counterparty", "net_amount", "direction", "status", "attempt"]
    list_filter = ["status", "direction"]
    actions = ["retry", "carry_forward"]
    readonly_fields = [f.name for f in SettlementLine._meta.fields] + ["statement"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("run", "partner", "charity")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="statement")
    def statement(self, line):
        return _statement_link(line)

    def _each(self, request, queryset, action, done: str):
        for line in queryset:
            try:
                result = action(line)
            except CoalitionError as error:
                self.message_user(request, f"Line #{line.pk}: {error.message}", messages.ERROR)
            else:
                if result.status == SettlementLine.Status.PAID:  # Stripe had it paid already
                    said = "was paid at Stripe by an earlier attempt: marked paid"
                else:
                    said = done
                self.message_user(request, f"Line #{line.pk} {said}.", messages.SUCCESS)

    @admin.action(
        description="Retry the failed lines through Stripe", permissions=["manage_settlement"]
    )
    def retry(self, request, queryset):
        self._each(
            request,
            queryset,
            lambda line: services.line_retry(line=line, user=request.user),
            "queued for retry",
        )

    @admin.action(
        description="Carry the failed lines forward to the next run",
        permissions=["manage_settlement"],
    )
    def carry_forward(self, request, queryset):
        self._each(
            request,
            queryset,
            lambda line: services.line_carry_forward(line=line, user=request.user),
            "carried forward",
        )


@admin.register(StripeEvent)
class StripeEventAdmin(admin.ModelAdmin):
    list_display = ["event_id", "type", "account", "received_at", "processed_at", "outcome"]
    list_filter = ["type"]
    search_fields = ["=event_id", "=object_id"]
    readonly_fields = [f.name for f in StripeEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ConnectedPayout)
class ConnectedPayoutAdmin(StripeEventAdmin):
    list_display = [
        "payout_id",
        "stripe_account",
        "partner",
        "charity",
        "amount",
        "currency",
        "status",
        "arrival_date",
    ]
    list_filter = ["status"]
    search_fields = ["=payout_id", "=stripe_account"]
    readonly_fields = [f.name for f in ConnectedPayout._meta.fields]
