"""Operator admin for charities. Status changes go through `charity_set_status` (actions),
so every verification and suspension is recorded with who did it and when; donations are
read-only, and refunded only through `donation_refund`."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Sum
from django.shortcuts import render
from django.urls import path

from coalition.errors import CoalitionError

from . import selectors, services
from .models import (
    Cause,
    Charity,
    CharityStatusChange,
    Donation,
    GivingPreference,
    MatchingCampaign,
)
from .services.charities import charity_fields_validate

# Service error fields (the API's names) → form fields.
_FIELD_NAMES = {
    "name": "name",
    "registrationNumber": "registration_number",
    "country": "country",
    "cause": "cause",
    "description": "description",
    "website": "website",
    "logoUrl": "logo_url",
    "stripeAccount": "stripe_account_id",
}


def _cause_choices():
    return [(cause.code, cause.name) for cause in Cause.objects.filter(active=True)]


@admin.register(Cause)
class CauseAdmin(admin.ModelAdmin):
    list_display = ["name", "code", "active", "position", "charities"]
    list_editable = ["active", "position"]
    ordering = ["position", "name"]

    def get_readonly_fields(self, request, obj=None):
        # Charities refer to a cause by its code: it cannot change once created.
        return ["code"] if obj else []

    def has_delete_permission(self, request, obj=None):
        return False  # deactivate instead: charities keep their cause

    @admin.display(description="Charities")
    def charities(self, cause):
        return Charity.objects.filter(cause=cause.code).count()


CHARITY_FIELDS = [
    "name",
    "registration_number",
    "country",
    "cause",
    "description",
    "website",
    "logo_url",
    "stripe_account_id",
]


class CharityForm(forms.ModelForm):
    cause = forms.ChoiceField(choices=_cause_choices)
    website = forms.URLField(required=False, assume_scheme="https")
    logo_url = forms.URLField(required=False, assume_scheme="https", label="Logo URL")

    class Meta:
        model = Charity
        fields = CHARITY_FIELDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        choices = _cause_choices()
        current = self.instance.cause if self.instance.pk else None
        if current and current not in dict(choices):
            choices.append((current, f"{current} (inactive)"))
        self.fields["cause"].choices = choices
        if self.instance.pk:
            # A charity's identity does not change; a new registration is a new charity.
            for name in ("registration_number", "country"):
                self.fields[name].disabled = True

    def clean(self):
        cleaned = super().clean()
        try:
            charity_fields_validate(
                **{name: cleaned.get(name, "") for name in CHARITY_FIELDS},
                any_cause=bool(self.instance.pk and cleaned.get("cause") == self.instance.cause),
            )
        except CoalitionError as error:
            field = _FIELD_NAMES.get(error.field)
            raise ValidationError({field: error.message} if field else error.message) from error
        if not self.instance.pk:
            duplicate = Charity.objects.filter(
                country=(cleaned.get("country") or "").strip().upper(),
                registration_number__iexact=(cleaned.get("registration_number") or "").strip(),
            )
            if duplicate.exists():
                raise ValidationError(
                    {"registration_number": "Already registered in this country."}
                )
        return cleaned


class StatusChangeInline(admin.TabularInline):
    model = CharityStatusChange
    fields = ["created_at", "from_status", "to_status", "changed_by", "reason"]
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ["-created_at", "-id"]


def _status_action(status: str, label: str):
    def action(modeladmin, request, queryset):
        changed, refused = 0, []
        for charity in queryset.order_by("pk"):
            try:
                services.charity_set_status(
                    charity=charity,
                    status=status,
                    changed_by=request.user,
                    reason=f"{label} in the admin",
                )
                changed += 1
            except CoalitionError as error:
                refused.append(f"{charity.name}: {error.message}")
        if changed:
            modeladmin.message_user(request, f"{label}: {changed} charities.", messages.SUCCESS)
        for message in refused:
            modeladmin.message_user(request, message, messages.WARNING)

    action.__name__ = f"make_{status}"
    action.short_description = f"{label} selected charities"
    action.allowed_permissions = ("change",)
    return action


@admin.register(Charity)
class CharityAdmin(admin.ModelAdmin):
    form = CharityForm
    list_display = [
        "name",
        "registration_number",
        "country",
        "cause",
        "status",
        "donated_points",
        "payable",
    ]
    list_filter = ["status", "cause", "country"]
    search_fields = ["name", "=registration_number"]
    readonly_fields = ["status", "created_at", "impact"]
    inlines = [StatusChangeInline]
    actions = [
        _status_action(Charity.Status.VERIFIED, "Verify"),
        _status_action(Charity.Status.SUSPENDED, "Suspend"),
    ]
    change_list_template = "charity/admin/charity_change_list.html"

    def get_queryset(self, request):
        return selectors.charities_with_totals(super().get_queryset(request))

    def has_delete_permission(self, request, obj=None):
        return False  # suspend instead: a charity keeps its history

    @admin.display(description="Donated points", ordering="total_donated_points")
    def donated_points(self, charity):
        return charity.total_donated_points

    @admin.display(description="Payable", boolean=True)
    def payable(self, charity):
        return selectors.charity_payable(charity)

    @admin.display(description="Impact")
    def impact(self, charity):
        if not charity.pk:
            return "—"
        totals = Donation.objects.filter(selectors.COUNTED, charity=charity).aggregate(
            points=Sum("points"),
            matched=Sum("matched_points"),
            value=Sum("value"),
            donors=Count("member", distinct=True),
        )
        return (
            f"{totals['points'] or 0} points donated by {totals['donors']} members "
            f"(value {totals['value'] or 0}), {totals['matched'] or 0} points matched by sponsors"
        )

    def save_model(self, request, obj, form, change):
        data = {name: form.cleaned_data.get(name, "") for name in CHARITY_FIELDS}
        if change:
            data.pop("registration_number")
            data.pop("country")
            updated = services.charity_update(charity=obj, **data)
            obj.pk = updated.pk
            return
        created = services.charity_create(
            **data, changed_by=request.user, reason="registered in the admin"
        )
        obj.pk = created.pk
        obj.status = created.status
        obj.created_at = created.created_at

    def get_urls(self):
        return [
            path(
                "impact/",
                self.admin_site.admin_view(self.impact_view),
                name="charity_charity_impact",
            ),
            *super().get_urls(),
        ]

    def impact_view(self, request):
        """Staff figures: totals per charity (every status) and per cause, and by month."""
        context = {
            **self.admin_site.each_context(request),
            "title": "Charity impact",
            "charities": selectors.charity_impact(verified_only=False),
            "causes": selectors.cause_impact(verified_only=False),
            "months": selectors.impact_over_time(),
            "opts": self.model._meta,
        }
        return render(request, "charity/admin/impact.html", context)


@admin.register(CharityStatusChange)
class CharityStatusChangeAdmin(admin.ModelAdmin):
    list_display = ["created_at", "charity", "from_status", "to_status", "changed_by", "reason"]
    list_filter = ["to_status"]
    search_fields = ["charity__name"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class MatchingCampaignForm(forms.ModelForm):
    cause = forms.ChoiceField(choices=lambda: [("", "—"), *_cause_choices()], required=False)

    class Meta:
        model = MatchingCampaign
        fields = [
            "sponsor",
            "name",
            "charity",
            "cause",
            "starts_at",
            "ends_at",
            "ratio",
            "cap_points",
            "per_member_cap_points",
            "active",
        ]


@admin.register(MatchingCampaign)
class MatchingCampaignAdmin(admin.ModelAdmin):
    form = MatchingCampaignForm
    list_display = [
        "name",
        "sponsor",
        "charity",
        "cause",
        "starts_at",
        "ends_at",
        "ratio",
        "cap_points",
        "matched_points",
        "active",
    ]
    list_filter = ["active", "sponsor"]
    readonly_fields = ["matched_points", "created_at"]
    search_fields = ["name", "sponsor__name", "charity__name"]

    def has_delete_permission(self, request, obj=None):
        return False  # deactivate instead: matched donations refer to it

    def save_model(self, request, obj, form, change):
        if change:
            # Donations move the matched counter concurrently: never write back the value
            # read with the form. Lock the row and carry the counter as it is now.
            current = MatchingCampaign.objects.select_for_update().get(pk=obj.pk)
            obj.matched_points = current.matched_points
        obj.save()


class RefundForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}))


@admin.action(description="Refund selected donations (before settlement)", permissions=["refund"])
def refund_donations(modeladmin, request, queryset):
    """The operator's refund: the member gets the points back, the sponsor's match is
    taken back. Refused for a donation a settlement run has claimed."""
    form = RefundForm(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        for donation in queryset.order_by("pk"):
            try:
                services.donation_refund(
                    donation=donation,
                    refunded_by=request.user,
                    reason=form.cleaned_data["reason"],
                )
            except CoalitionError as error:
                modeladmin.message_user(
                    request, f"{donation.receipt_number}: {error.message}", messages.WARNING
                )
            else:
                modeladmin.message_user(
                    request, f"{donation.receipt_number} refunded.", messages.SUCCESS
                )
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Refund donations",
        "donations": queryset.select_related("member", "charity"),
        "form": form,
        "opts": modeladmin.model._meta,
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
    }
    return render(request, "charity/admin/refund.html", context)


@admin.register(Donation)
class DonationAdmin(admin.ModelAdmin):
    list_display = [
        "receipt_number",
        "created_at",
        "member",
        "charity",
        "source",
        "points",
        "value",
        "currency",
        "matched_points",
        "refunded_at",
    ]
    list_filter = ["source", "charity", ("refunded_at", admin.EmptyFieldListFilter)]
    search_fields = ["=receipt_number", "=member__member_number", "charity__name"]
    list_select_related = ["member", "charity"]
    date_hierarchy = "created_at"
    actions = [refund_donations]
    readonly_fields = ["disbursement"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # read-only: the only change is a refund, through the service

    def has_refund_permission(self, request):
        return request.user.has_perm("charity.change_donation")

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Paid to the charity")
    def disbursement(self, donation):
        found = selectors.donation_disbursement(donation)
        if found is None:
            return "not claimed by a settlement run yet"
        run_id, transfer_id, paid_at = found
        if paid_at is None:
            return f"settlement run {run_id}, not paid yet"
        return f"settlement run {run_id}, transfer {transfer_id}, paid {paid_at:%Y-%m-%d %H:%M}"


@admin.register(GivingPreference)
class GivingPreferenceAdmin(admin.ModelAdmin):
    list_display = [
        "member",
        "round_up_charity",
        "round_up_percent",
        "expiry_charity",
        "updated_at",
    ]
    list_select_related = ["member", "round_up_charity", "expiry_charity"]
    search_fields = ["=member__member_number"]

    def has_add_permission(self, request, obj=None):
        return False  # members choose; the admin only looks

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
