"""Operator admin for partner brands: onboarding, stores, commercial terms, API keys,
promotions, rewards and partner identities.

Writes that have a service go through it: a partner is onboarded by `partner_create`, new
terms by `terms_set`, keys by `api_key_create` / `api_key_revoke`, status by
`partner_set_status`. Their forms validate by a dry run of that same service (inside a
savepoint that is always rolled back), so the admin refuses exactly what the service refuses,
with its message, on the right field. Terms and keys are never edited or deleted: history
stays as it was priced and authenticated.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Count, Sum
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from coalition.errors import CoalitionError

from . import selectors, services
from .models import (
    ApiKey,
    CommercialTerms,
    Partner,
    PartnerIdentity,
    Promotion,
    PromotionAward,
    Reward,
    RewardRedemption,
    Store,
)
from .services.accounts import ALL_SCOPES

# --------------------------------------------------------------------------- helpers


class _DryRunDone(Exception):
    """Raised to roll back a service call that only validated the form."""


def _dry_run(form: forms.BaseForm, call: Callable[[], Any], fields: dict[str, str]) -> None:
    """Run `call` in a savepoint that is always rolled back; a refusal becomes a form error
    on the form field the service named (`fields` maps service field → form field)."""
    try:
        with transaction.atomic():
            call()
            raise _DryRunDone
    except _DryRunDone:
        pass
    except CoalitionError as error:
        field = fields.get(error.field or "")
        form.add_error(field if field in form.fields else None, error.message)


def _string_list(value: Any, *, what: str) -> list[str]:
    if value in (None, ""):
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise forms.ValidationError(f'Enter a JSON list of {what}, e.g. ["gift-cards"].')
    return [item.strip() for item in value if item.strip()]


def _redemption_above_issuance(terms: CommercialTerms) -> bool:
    return terms.redemption_price > terms.issuance_price


_STRIPE_IDS = {"stripe_account_id": "acct_", "stripe_customer_id": "cus_"}


def _clean_stripe_ids(form: forms.ModelForm) -> None:
    for field, prefix in _STRIPE_IDS.items():
        if field not in form.cleaned_data:
            continue
        value = (form.cleaned_data[field] or "").strip()
        if value and not re.fullmatch(rf"{prefix}[A-Za-z0-9_]+", value):
            form.add_error(field, f"Must look like {prefix}…")
        else:
            form.cleaned_data[field] = value


def _adopt(target: Any, saved: Any) -> None:
    """Make the admin's unsaved form instance the row a service just created, so that the
    admin's log entry and redirect point at it."""
    for model_field in saved._meta.concrete_fields:
        setattr(target, model_field.attname, getattr(saved, model_field.attname))
    target._state.adding = False
    target._state.db = saved._state.db


def _key_created_response(request, admin_site, api_key: ApiKey, raw_key: str):
    """The one page that ever shows a key's secret: the response to the POST creating it."""
    context = {
        **admin_site.each_context(request),
        "title": "API key created — copy it now",
        "api_key": api_key,
        "partner": api_key.partner,
        "raw_key": raw_key,
        "opts": ApiKey._meta,
    }
    response = TemplateResponse(request, "admin/partners/api_key_created.html", context)
    response["Cache-Control"] = "no-store"
    return response


# --------------------------------------------------------------------------- partners


class StoreInline(admin.TabularInline):
    model = Store
    fields = ["code", "name"]
    extra = 0
    can_delete = False


class TermsHistoryInline(admin.TabularInline):
    """Every commercial terms row the partner ever had, newest first. Read-only: new terms
    are added through the terms page (the `terms_set` service)."""

    model = CommercialTerms
    verbose_name = "commercial terms"
    verbose_name_plural = "commercial terms history (add new terms from the terms page)"
    fields = [
        "valid_from",
        "issuance_price",
        "redemption_price",
        "allow_redemption_above_issuance",
        "status",
        "created_at",
    ]
    readonly_fields = fields
    ordering = ["-valid_from"]
    extra = 0
    max_num = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="status")
    def status(self, terms):
        now = timezone.now()
        if terms.valid_from > now:
            label = "scheduled"
        else:
            in_force = selectors.terms_at(partner=terms.partner, moment=now)
            label = "in force" if in_force.pk == terms.pk else "superseded"
        if _redemption_above_issuance(terms):
            label += " — ⚠ redemption above issuance"
        return label


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    fields = ["name", "prefix", "scopes", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class PartnerCreateForm(forms.ModelForm):
    """Onboarding: the brand, its first commercial terms and an API key, in one service."""

    issuance_price = forms.DecimalField(
        max_digits=12, decimal_places=6, help_text="What the partner pays per point it issues."
    )
    redemption_price = forms.DecimalField(
        max_digits=12,
        decimal_places=6,
        help_text="What the partner is reimbursed per point redeemed at its tills.",
    )
    allow_redemption_above_issuance = forms.BooleanField(
        required=False,
        help_text="Tick only if the operator accepts reimbursing more per point than it gets.",
    )

    class Meta:
        model = Partner
        fields = [
            "code",
            "name",
            "currency",
            "earn_rate",
            "stripe_account_id",
            "stripe_customer_id",
            "contact_email",
        ]

    SERVICE_FIELDS = {
        "code": "code",
        "name": "name",
        "currency": "currency",
        "earnRate": "earn_rate",
        "issuancePrice": "issuance_price",
        "redemptionPrice": "redemption_price",
        "stripeAccount": "stripe_account_id",
        "stripeCustomer": "stripe_customer_id",
    }

    def service_arguments(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "code": data["code"],
            "name": data["name"],
            "currency": data["currency"],
            "earn_rate": data["earn_rate"],
            "issuance_price": data["issuance_price"],
            "redemption_price": data["redemption_price"],
            "stripe_account_id": data.get("stripe_account_id"),
            "stripe_customer_id": data.get("stripe_customer_id"),
            "contact_email": data.get("contact_email") or "",
            "allow_redemption_above_issuance": data.get("allow_redemption_above_issuance", False),
        }

    def clean(self):
        cleaned = super().clean()
        if not self.errors:
            _dry_run(
                self,
                lambda: services.partner_create(**self.service_arguments()),
                self.SERVICE_FIELDS,
            )
        return cleaned


class PartnerChangeForm(forms.ModelForm):
    class Meta:
        model = Partner
        fields = [
            "name",
            "status",
            "earn_rate",
            "contact_email",
            "stripe_account_id",
            "stripe_customer_id",
            "excluded_categories",
        ]

    def clean_excluded_categories(self):
        return _string_list(self.cleaned_data.get("excluded_categories"), what="categories")

    def clean(self):
        cleaned = super().clean()
        _clean_stripe_ids(self)
        return cleaned


@admin.register(Partner)
class PartnerAdmin(admin.ModelAdmin):
    list_display = [
        "code",
        "name",
        "currency",
        "status",
        "earn_rate",
        "issuance_price",
        "redemption_price",
        "created_at",
    ]
    list_filter = ["status", "currency"]
    search_fields = ["code", "name", "contact_email"]
    actions = ["suspend", "reactivate"]

    def has_delete_permission(self, request, obj=None):
        return False  # the ledger and settlement keep referring to it: suspend instead

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs.setdefault("form", PartnerChangeForm if obj is not None else PartnerCreateForm)
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return [
                *PartnerCreateForm.Meta.fields,
                "issuance_price",
                "redemption_price",
                "allow_redemption_above_issuance",
            ]
        return ["code", "currency", *PartnerChangeForm.Meta.fields, "created_at", "terms_link"]

    def get_readonly_fields(self, request, obj=None):
        return ["code", "currency", "created_at", "terms_link"] if obj is not None else []

    def get_inlines(self, request, obj):
        return [StoreInline, TermsHistoryInline, ApiKeyInline] if obj is not None else []

    @admin.display(description="commercial terms")
    def terms_link(self, partner):
        url = reverse("admin:partners_commercialterms_add") + f"?partner={partner.pk}"
        return format_html('<a href="{}">Set new commercial terms…</a>', url)

    def _terms_now(self, partner) -> CommercialTerms | None:
        return partner.terms.filter(valid_from__lte=timezone.now()).order_by("-valid_from").first()

    @admin.display(description="issuance price")
    def issuance_price(self, partner):
        terms = self._terms_now(partner)
        return terms.issuance_price if terms else "—"

    @admin.display(description="redemption price")
    def redemption_price(self, partner):
        terms = self._terms_now(partner)
        if terms is None:
            return "—"
        if _redemption_above_issuance(terms):
            return format_html("{} ⚠ above issuance", terms.redemption_price)
        return terms.redemption_price

    def save_model(self, request, obj, form, change):
        if not change:
            partner, raw_key = services.partner_create(**form.service_arguments())
            _adopt(obj, partner)
            obj._new_api_key = (partner.api_keys.get(), raw_key)
            return
        status_changed = "status" in form.changed_data
        obj.save()
        if status_changed:
            services.partner_set_status(partner=obj, status=obj.status)

    def response_add(self, request, obj, post_url_continue=None):
        api_key, raw_key = obj._new_api_key
        self.message_user(request, f"Partner {obj.code} onboarded with its first terms.")
        return _key_created_response(request, self.admin_site, api_key, raw_key)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        partner = self.get_object(request, object_id)
        if partner is not None and request.method == "GET":
            current = self._terms_now(partner)
            if current is not None and _redemption_above_issuance(current):
                messages.warning(
                    request,
                    f"The terms in force reimburse {current.redemption_price} per redeemed "
                    f"point, more than the {current.issuance_price} {partner.code} pays per "
                    "issued point (allowed by the operator).",
                )
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(
        description="Suspend selected partners (no earning, no burning)", permissions=["change"]
    )
    def suspend(self, request, queryset):
        for partner in queryset.filter(status=Partner.Status.ACTIVE):
            services.partner_set_status(partner=partner, status=Partner.Status.SUSPENDED)
        self.message_user(request, "Suspended.")

    @admin.action(description="Reactivate selected partners", permissions=["change"])
    def reactivate(self, request, queryset):
        for partner in queryset.filter(status=Partner.Status.SUSPENDED):
            services.partner_set_status(partner=partner, status=Partner.Status.ACTIVE)
        self.message_user(request, "Reactivated.")


@admin.register(Store)
class StoreAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "partner", "created_at"]
    list_filter = ["partner"]
    search_fields = ["code", "name", "partner__code"]
    list_select_related = ["partner"]


# --------------------------------------------------------------------------- terms


class CommercialTermsForm(forms.ModelForm):
    """New terms for a partner from a moment on (empty: now), through `terms_set`."""

    class Meta:
        model = CommercialTerms
        fields = [
            "partner",
            "valid_from",
            "issuance_price",
            "redemption_price",
            "allow_redemption_above_issuance",
        ]

    SERVICE_FIELDS = {
        "issuancePrice": "issuance_price",
        "redemptionPrice": "redemption_price",
        "validFrom": "valid_from",
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        valid_from = self.fields["valid_from"]
        valid_from.required = False
        valid_from.help_text = (
            "Empty: from now. Terms cannot start in the past: that would reprice transactions "
            "already made."
        )

    def service_arguments(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "partner": data["partner"],
            "issuance_price": data["issuance_price"],
            "redemption_price": data["redemption_price"],
            "valid_from": data.get("valid_from"),
            "allow_redemption_above_issuance": data.get("allow_redemption_above_issuance", False),
        }

    def clean(self):
        cleaned = super().clean()
        if not self.errors:
            _dry_run(
                self, lambda: services.terms_set(**self.service_arguments()), self.SERVICE_FIELDS
            )
        return cleaned


@admin.register(CommercialTerms)
class CommercialTermsAdmin(admin.ModelAdmin):
    """Terms are history: added through `terms_set`, never edited or deleted."""

    form = CommercialTermsForm
    list_display = [
        "partner",
        "valid_from",
        "issuance_price",
        "redemption_price",
        "above_issuance",
        "created_at",
    ]
    list_filter = ["partner"]
    list_select_related = ["partner"]
    date_hierarchy = "valid_from"

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="redemption vs issuance", boolean=False)
    def above_issuance(self, terms):
        if _redemption_above_issuance(terms):
            return "⚠ redemption above issuance (allowed)"
        return "ok"

    def save_model(self, request, obj, form, change):
        terms = services.terms_set(**form.service_arguments())
        _adopt(obj, terms)
        if _redemption_above_issuance(terms):
            messages.warning(
                request,
                f"{terms.partner.code} will be reimbursed {terms.redemption_price} per redeemed "
                f"point but pays only {terms.issuance_price} per issued point.",
            )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        terms = self.get_object(request, object_id)
        if terms is not None and _redemption_above_issuance(terms):
            messages.warning(
                request, "The redemption price of these terms is above their issuance price."
            )
        return super().change_view(request, object_id, form_url, extra_context)


# --------------------------------------------------------------------------- API keys


class ApiKeyCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=[(scope, scope) for scope in ALL_SCOPES],
        initial=list(ALL_SCOPES),
        widget=forms.CheckboxSelectMultiple,
    )

    class Meta:
        model = ApiKey
        fields = ["partner", "name", "scopes"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are created by `api_key_create` (the secret is shown once, on the page answering
    the creation) and revoked by `api_key_revoke`; never edited or deleted."""

    form = ApiKeyCreateForm
    list_display = [
        "prefix",
        "partner",
        "name",
        "scopes",
        "state",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["partner", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["prefix", "name", "partner__code"]
    list_select_related = ["partner"]
    actions = ["revoke"]
    view_fields = [
        "partner",
        "name",
        "prefix",
        "scopes",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]

    def get_fields(self, request, obj=None):
        return ApiKeyCreateForm.Meta.fields if obj is None else self.view_fields

    def get_readonly_fields(self, request, obj=None):
        return self.view_fields if obj is not None else []

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_revoke_permission(self, request):
        return request.user.has_perm("partners.change_apikey")

    @admin.display(description="state")
    def state(self, key):
        return "revoked" if key.revoked_at else "active"

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        key, raw_key = services.api_key_create(
            partner=data["partner"], name=data["name"], scopes=data["scopes"]
        )
        _adopt(obj, key)
        obj._raw_key = raw_key

    def response_add(self, request, obj, post_url_continue=None):
        return _key_created_response(request, self.admin_site, obj, obj._raw_key)

    @admin.action(
        description="Revoke selected keys (refused from the next request on)",
        permissions=["revoke"],
    )
    def revoke(self, request, queryset):
        revoked = 0
        for key in queryset.filter(revoked_at__isnull=True):
            services.api_key_revoke(key=key)
            revoked += 1
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)


# --------------------------------------------------------------------------- promotions


class PromotionForm(forms.ModelForm):
    class Meta:
        model = Promotion
        fields = [
            "name",
            "partner",
            "kind",
            "starts_at",
            "ends_at",
            "multiplier",
            "bonus_points",
            "min_spend",
            "categories",
            "skus",
            "tiers",
            "first_purchase_only",
            "per_member_limit",
            "budget_points",
            "exclusive",
            "active",
        ]

    def clean_categories(self):
        return _string_list(self.cleaned_data.get("categories"), what="categories")

    def clean_skus(self):
        return _string_list(self.cleaned_data.get("skus"), what="SKUs")

    def clean(self):
        cleaned = super().clean()
        starts_at, ends_at = cleaned.get("starts_at"), cleaned.get("ends_at")
        if starts_at and ends_at and ends_at <= starts_at:
            # On the field, so the model's own window constraint doesn't repeat it, worse.
            self.add_error("ends_at", "The promotion must end after it starts.")
        kind = cleaned.get("kind")
        multiplier = cleaned.get("multiplier")
        if kind == Promotion.Kind.MULTIPLIER and multiplier is not None and multiplier <= 1:
            self.add_error("multiplier", "A multiplier promotion needs a multiplier above 1.")
        if kind in (Promotion.Kind.FIXED_BONUS, Promotion.Kind.CROSS_BRAND) and not cleaned.get(
            "bonus_points"
        ):
            self.add_error("bonus_points", "A bonus promotion needs bonus points above 0.")
        min_spend = cleaned.get("min_spend")
        if min_spend is not None and min_spend < 0:
            self.add_error("min_spend", "The minimum spend cannot be negative.")
        budget = cleaned.get("budget_points")
        if budget is not None and self.instance.pk:
            awarded = _awarded(self.instance)
            if budget < awarded:
                self.add_error(
                    "budget_points",
                    f"{awarded} points were already awarded: the budget can't be lower.",
                )
        return cleaned


def _awarded(promotion: Promotion) -> int:
    """Points a promotion awarded so far (its awards; the counter is kept for budgets only)."""
    return promotion.awards.aggregate(total=Sum("points"))["total"] or 0


@admin.register(Promotion)
class PromotionAdmin(admin.ModelAdmin):
    form = PromotionForm
    list_display = [
        "name",
        "funded_by",
        "kind",
        "starts_at",
        "ends_at",
        "active",
        "exclusive",
        "budget_points",
        "awarded",
    ]
    list_filter = ["kind", "active", "exclusive", "partner"]
    search_fields = ["name", "partner__code"]
    list_select_related = ["partner"]
    filter_horizontal = ["tiers"]
    readonly_fields = ["awarded_points", "created_at"]
    date_hierarchy = "starts_at"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(awarded_total=Sum("awards__points"))

    @admin.display(description="funded by")
    def funded_by(self, promotion):
        return "operator (coalition-wide)" if promotion.partner_id is None else promotion.partner

    @admin.display(description="awarded points", ordering="awarded_total")
    def awarded(self, promotion):
        return promotion.awarded_total or 0

    def save_model(self, request, obj, form, change):
        if change:
            # Purchases move the budget counter concurrently: never write back the value read
            # when the form was loaded. Lock the row and carry the counter as it is now.
            current = Promotion.objects.select_for_update().get(pk=obj.pk)
            obj.awarded_points = current.awarded_points
            if current.budget_points is None and obj.budget_points is not None:
                obj.awarded_points = _awarded(obj)  # a budget starts from what was given
        obj.save()


@admin.register(PromotionAward)
class PromotionAwardAdmin(admin.ModelAdmin):
    list_display = ["promotion", "member", "transaction", "points", "created_at"]
    list_select_related = ["promotion", "member"]
    search_fields = ["promotion__name", "=member__member_number"]
    raw_id_fields = ["promotion", "member", "transaction"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# --------------------------------------------------------------------------- rewards


class RewardForm(forms.ModelForm):
    # The stock as the form showed it: what the operator changed is the difference, applied
    # to the stock as it is when saved (redemptions take from it meanwhile).
    stock_shown = forms.IntegerField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.fields["stock_shown"].initial = self.instance.stock

    class Meta:
        model = Reward
        fields = [
            "partner",
            "name",
            "description",
            "points_cost",
            "stock",
            "starts_at",
            "ends_at",
            "active",
        ]

    def clean_points_cost(self):
        points_cost = self.cleaned_data.get("points_cost")
        if points_cost is not None and points_cost <= 0:
            raise forms.ValidationError("A reward costs at least 1 point.")
        return points_cost

    def clean(self):
        cleaned = super().clean()
        starts_at, ends_at = cleaned.get("starts_at"), cleaned.get("ends_at")
        if starts_at and ends_at and ends_at <= starts_at:
            self.add_error("ends_at", "The reward must end after it starts.")
        return cleaned


@admin.register(Reward)
class RewardAdmin(admin.ModelAdmin):
    form = RewardForm
    list_display = [
        "name",
        "partner",
        "points_cost",
        "stock",
        "starts_at",
        "ends_at",
        "active",
        "redeemed",
    ]
    list_filter = ["active", "partner"]
    search_fields = ["name", "partner__code"]
    list_select_related = ["partner"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(redeemed_count=Count("redemptions"))

    @admin.display(description="redeemed", ordering="redeemed_count")
    def redeemed(self, reward):
        return reward.redeemed_count

    def save_model(self, request, obj, form, change):
        if change:
            # Members redeem concurrently: never write back the stock the form showed. Lock
            # the row and apply the operator's change (new - shown) to the stock as it is.
            current = Reward.objects.select_for_update().get(pk=obj.pk)
            shown = form.cleaned_data.get("stock_shown")
            if None not in (obj.stock, shown, current.stock):
                obj.stock = max(0, current.stock + obj.stock - shown)
        obj.save()


@admin.register(RewardRedemption)
class RewardRedemptionAdmin(admin.ModelAdmin):
    list_display = ["reward", "member", "transaction", "created_at"]
    list_select_related = ["reward", "member"]
    search_fields = ["reward__name", "=member__member_number"]
    raw_id_fields = ["reward", "member", "transaction"]

    def has_add_permission(self, request):
        return False  # members redeem through `reward_redeem` (points and stock together)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# --------------------------------------------------------------------------- identities


@admin.register(PartnerIdentity)
class PartnerIdentityAdmin(admin.ModelAdmin):
    list_display = ["customer_reference", "partner", "member", "created_at"]
    list_filter = ["partner"]
    search_fields = ["customer_reference", "=member__member_number", "member__email"]
    list_select_related = ["partner", "member"]
    raw_id_fields = ["member"]
    readonly_fields = ["created_at"]


# Purchase files (issue 8): upload, progress, result — kept in its own module.
from . import imports_admin  # noqa: E402, F401
