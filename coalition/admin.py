"""Operator admin for the programme and its members. The ledger is read-only here: the only
way to change points from the admin is an adjustment, which goes through `points_adjust`."""

import uuid

from django import forms
from django.contrib import admin, messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse

from . import services
from .errors import CoalitionError
from .models import (
    Account,
    Entry,
    LedgerTransaction,
    Member,
    MemberTier,
    PointLot,
    Programme,
    RedemptionHold,
    Tier,
    TierChange,
)
from .privacy_admin import erase_personal_data, export_personal_data


class ReadOnlyAdmin(admin.ModelAdmin):
    """The ledger is append-only: viewable, never editable or deletable in the admin."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Programme)
class ProgrammeAdmin(admin.ModelAdmin):
    list_display = ["name", "currency", "expiry_policy", "expiry_months", "donation_price"]

    def has_delete_permission(self, request, obj=None):
        return False


class AdjustmentForm(forms.Form):
    points = forms.IntegerField(help_text="Positive to credit, negative to take back.")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}))
    # A fresh key per rendered form: a double submit posts the adjustment once.
    idempotency_key = forms.CharField(widget=forms.HiddenInput)


class TransactionInline(admin.TabularInline):
    model = LedgerTransaction
    fk_name = "member"
    fields = ["created_at", "kind", "member_points", "partner", "charity", "reference"]
    readonly_fields = fields
    ordering = ["-created_at", "-id"]
    extra = 0
    max_num = 0
    show_change_link = True
    can_delete = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("partner", "charity")


@admin.register(Member)
class MemberAdmin(admin.ModelAdmin):
    list_display = ["member_number", "display_name", "email", "status", "created_at"]
    list_filter = ["status"]
    search_fields = ["=member_number", "email", "display_name"]
    readonly_fields = [
        "member_number",
        "referral_code",
        "created_at",
        "balance",
        "held",
        "password",
        "token_version",
    ]
    fields = [
        "member_number",
        "email",
        "display_name",
        "birth_date",
        "status",
        "balance",
        "held",
        "referral_code",
        "created_at",
    ]
    inlines = [TransactionInline]
    # Personal data (issue 9): export and erasure, in coalition/privacy_admin.py.
    actions = ["suspend", "reactivate", export_personal_data, erase_personal_data]
    change_form_template = "admin/coalition/member/change_form.html"

    def has_add_permission(self, request):
        return False  # members enrol through partners (enrollMember)

    def has_delete_permission(self, request, obj=None):
        return False  # the ledger keeps their history

    @admin.display(description="Balance (points)")
    def balance(self, obj):
        return obj.wallet.balance

    @admin.display(description="Held (points)")
    def held(self, obj):
        return obj.wallet.held

    @admin.action(description="Suspend selected members", permissions=["change"])
    def suspend(self, request, queryset):
        for member in queryset.exclude(status=Member.Status.CLOSED):
            services.member_set_status(member=member, status=Member.Status.SUSPENDED)
        self.message_user(request, "Suspended.")

    @admin.action(description="Reactivate selected members", permissions=["change"])
    def reactivate(self, request, queryset):
        for member in queryset.filter(status=Member.Status.SUSPENDED):
            services.member_set_status(member=member, status=Member.Status.ACTIVE)
        self.message_user(request, "Reactivated.")

    def get_urls(self):
        return [
            path(
                "<int:member_id>/adjust/",
                self.admin_site.admin_view(self.adjust_view),
                name="coalition_member_adjust",
            ),
            *super().get_urls(),
        ]

    def adjust_view(self, request, member_id):
        """An operator adjustment, posted through the ledger service."""
        if not request.user.has_perm("coalition.add_adjustmentnote"):
            messages.error(request, "You may not adjust points.")
            return redirect(reverse("admin:coalition_member_change", args=[member_id]))
        member = get_object_or_404(Member, pk=member_id)
        form = AdjustmentForm(request.POST or None, initial={"idempotency_key": uuid.uuid4()})
        if request.method == "POST" and form.is_valid():
            try:
                services.points_adjust(
                    staff_user=request.user,
                    member=member,
                    points=form.cleaned_data["points"],
                    reason=form.cleaned_data["reason"],
                    idempotency_key=f"admin-adjust:{form.cleaned_data['idempotency_key']}",
                )
            except CoalitionError as error:
                form.add_error("points" if error.field == "points" else None, error.message)
            else:
                messages.success(request, f"Adjusted {member.member_number}.")
                return redirect(reverse("admin:coalition_member_change", args=[member.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Adjust points of {member}",
            "member": member,
            "form": form,
            "opts": self.model._meta,
        }
        return render(request, "admin/coalition/member/adjust.html", context)


class EntryInline(admin.TabularInline):
    model = Entry
    fields = ["account", "points"]
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at", "kind", "member", "partner", "charity", "member_points"]
    list_filter = ["kind"]
    search_fields = ["=id", "reference", "=member__member_number", "idempotency_key"]
    list_select_related = ["member", "partner", "charity"]
    date_hierarchy = "created_at"
    inlines = [EntryInline]


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "member", "partner", "charity", "balance", "held"]
    list_filter = ["kind"]
    search_fields = ["=member__member_number", "partner__code", "charity__name"]
    list_select_related = ["member", "partner", "charity"]


@admin.register(PointLot)
class PointLotAdmin(ReadOnlyAdmin):
    list_display = ["id", "member", "points", "remaining", "expires_at", "created_at"]
    search_fields = ["=member__member_number"]
    list_select_related = ["member"]


@admin.register(RedemptionHold)
class RedemptionHoldAdmin(ReadOnlyAdmin):
    list_display = ["id", "member", "partner", "points", "captured_points", "status", "expires_at"]
    list_filter = ["status"]
    search_fields = ["=member__member_number", "reference"]
    list_select_related = ["member", "partner"]


# --------------------------------------------------------------------------- tiers


@admin.register(Tier)
class TierAdmin(admin.ModelAdmin):
    """Coalition-wide tiers. A changed threshold applies to upgrades at the next earn and to
    downgrades at the nightly recalculation (after the programme's grace period)."""

    list_display = ["code", "name", "qualifying_points", "earn_multiplier", "members"]
    search_fields = ["code", "name"]
    ordering = ["qualifying_points"]

    def get_queryset(self, request):
        from django.db.models import Count, OuterRef, Subquery
        from django.db.models.functions import Coalesce

        members = (
            MemberTier.objects.filter(tier=OuterRef("pk"))
            .order_by()
            .values("tier")
            .annotate(count=Count("pk"))
            .values("count")
        )
        return super().get_queryset(request).annotate(member_count=Coalesce(Subquery(members), 0))

    @admin.display(description="members", ordering="member_count")
    def members(self, obj):
        return obj.member_count


@admin.register(MemberTier)
class MemberTierAdmin(ReadOnlyAdmin):
    """Members' current tiers: moved by earns and the nightly recalculation only."""

    list_display = ["member", "tier", "since", "below_since"]
    list_filter = ["tier", ("below_since", admin.EmptyFieldListFilter)]
    search_fields = ["=member__member_number", "member__email"]
    list_select_related = ["member", "tier"]


@admin.register(TierChange)
class TierChangeAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "member", "from_tier", "to_tier", "qualifying_points", "reason"]
    list_filter = ["reason", "to_tier"]
    search_fields = ["=member__member_number"]
    list_select_related = ["member", "from_tier", "to_tier"]
    date_hierarchy = "created_at"
