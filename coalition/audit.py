"""The audit trail (issue 9): who did what to which object, when, with the object before and
after — for every staff and operator action.

Recorded
- by `audit_record(...)`, called by staff services in their own database transaction
  (points_adjust, member_set_status with a staff user, member_erase, …);
- for every Django admin change, deletion and bulk action, by wrappers put around each
  registered ModelAdmin at start-up (`admin_audit_install`, from CoalitionConfig.ready), so
  every app's admin is covered without each one opting in. Django's own LogEntry says only
  *that* something changed; the trail keeps the field values before and after.

`AuditEvent` rows are append-only (PostgreSQL triggers) and read-only in the admin.
Secrets are never copied into the trail: fields named like passwords, digests, secrets and
tokens are replaced by "[redacted]". Nor is a person's data (a member's email, name, birth
date, referral code; a partner's customer reference): it is replaced by a keyed pseudonym,
so the trail shows that it changed, and an erasure leaves nothing of the person in it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction

from .models import AuditEvent

logger = logging.getLogger(__name__)

REDACTED = "[redacted]"
SECRET_FIELDS = ("password", "digest", "secret", "token", "api_key")
# A person's data, pseudonymised in the trail (issue 9: erasure cannot reach the append-only
# trail, so the trail never holds it).
PERSONAL_FIELDS = {
    "coalition.member": ("email", "display_name", "birth_date", "referral_code"),
    "partners.partneridentity": ("customer_reference",),
}
# Admin-registered models whose changes are not themselves audited.
NOT_AUDITED = {"coalition.auditevent", "coalition.outboxmessage", "admin.logentry"}


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def _pseudonym(label: str, field: str, value: Any) -> str:
    """A stable keyed digest of a personal value: equal values give equal pseudonyms, so the
    trail still shows *whether* a field changed, but never the value itself."""
    digest = hmac.new(
        settings.SECRET_KEY.encode(), f"{label}.{field}:{value}".encode(), hashlib.sha256
    ).hexdigest()
    return f"[personal:{digest[:12]}]"


def snapshot(instance: models.Model | None, *, personal: bool = False) -> dict | None:
    """The object's concrete field values, JSON-safe, secrets redacted (None: no object).

    A person's data (PERSONAL_FIELDS) is replaced by a pseudonym unless `personal` is true
    (the member's own export): the trail is append-only, so what it holds would outlive an
    erasure of the person."""
    if instance is None:
        return None
    label = instance._meta.label_lower
    personal_fields = () if personal else PERSONAL_FIELDS.get(label, ())
    values = {}
    for field in instance._meta.concrete_fields:
        value = getattr(instance, field.attname)
        if any(word in field.name for word in SECRET_FIELDS):
            value = REDACTED if value else value
        elif field.name in personal_fields and value not in (None, ""):
            value = _pseudonym(label, field.name, value)
        values[field.attname] = value
    return _json_safe(values)


def object_type_of(instance_or_model) -> str:
    return instance_or_model._meta.label_lower


def _actor_label(actor) -> str:
    if actor is None:
        return "system"
    return getattr(actor, "get_username", lambda: str(actor))()


def audit_record(
    *,
    actor: Any,
    action: str,
    object_type: str,
    object_id: Any = "",
    before: dict | None = None,
    after: dict | None = None,
) -> AuditEvent:
    """Append one event to the trail, in the caller's database transaction (so it exists
    if and only if the action it records committed). `actor` is a staff user or None (a
    system job)."""
    user = actor if getattr(actor, "pk", None) is not None else None
    return AuditEvent.objects.create(
        actor=user,
        actor_label=_actor_label(actor)[:150],
        action=action[:100],
        object_type=object_type[:100],
        object_id=str(object_id if object_id is not None else "")[:64],
        before=_json_safe(before) if before is not None else None,
        after=_json_safe(after) if after is not None else None,
    )


def audit_record_change(
    *, actor: Any, action: str, instance: models.Model, before: dict | None
) -> AuditEvent:
    """Record a change of a model instance: `before` as taken earlier, after as it is now."""
    return audit_record(
        actor=actor,
        action=action,
        object_type=object_type_of(instance),
        object_id=instance.pk,
        before=before,
        after=snapshot(instance),
    )


# --------------------------------------------------------------------------- the admin


def _stored(model: type[models.Model], pk: Any) -> dict | None:
    if pk is None:
        return None
    return snapshot(model._default_manager.filter(pk=pk).first())


def _stored_many(model: type[models.Model], pks: Iterable[Any]) -> dict[Any, dict]:
    return {obj.pk: snapshot(obj) for obj in model._default_manager.filter(pk__in=list(pks))}


def _audited_admin(model_admin) -> None:
    """Wrap one ModelAdmin's save, delete and action entry points."""
    model = model_admin.model
    save_model = model_admin.save_model
    delete_model = model_admin.delete_model
    delete_queryset = model_admin.delete_queryset
    response_action = model_admin.response_action

    def audited_save_model(request, obj, form, change):
        with transaction.atomic():
            before = _stored(model, obj.pk) if change else None
            save_model(request, obj, form, change)
            audit_record(  # after: as stored (the database's rounding, defaults, …)
                actor=request.user,
                action="admin.change" if change else "admin.add",
                object_type=object_type_of(model),
                object_id=obj.pk,
                before=before,
                after=_stored(model, obj.pk),
            )

    def audited_delete_model(request, obj):
        with transaction.atomic():
            before, pk = snapshot(obj), obj.pk
            delete_model(request, obj)
            audit_record(
                actor=request.user,
                action="admin.delete",
                object_type=object_type_of(model),
                object_id=pk,
                before=before,
            )

    def audited_delete_queryset(request, queryset):
        with transaction.atomic():
            before = {obj.pk: snapshot(obj) for obj in queryset}
            delete_queryset(request, queryset)
            for pk, values in before.items():
                audit_record(
                    actor=request.user,
                    action="admin.delete",
                    object_type=object_type_of(model),
                    object_id=pk,
                    before=values,
                )

    def audited_response_action(request, queryset):
        action = request.POST.get("action", "")
        if action == "delete_selected" or request.method != "POST":
            return response_action(request, queryset)  # deletions are recorded above
        if request.POST.get("select_across") == "1":
            pks = list(queryset.values_list("pk", flat=True))
        else:
            pks = request.POST.getlist("_selected_action")
        before = _stored_many(model, pks)
        response = response_action(request, queryset)
        after = _stored_many(model, pks)
        with transaction.atomic():
            for pk in sorted(set(before) | set(after), key=str):
                audit_record(
                    actor=request.user,
                    action=f"admin.action:{action}"[:100],
                    object_type=object_type_of(model),
                    object_id=pk,
                    before=before.get(pk),
                    after=after.get(pk),
                )
        return response

    model_admin.save_model = audited_save_model
    model_admin.delete_model = audited_delete_model
    model_admin.delete_queryset = audited_delete_queryset
    model_admin.response_action = audited_response_action
    model_admin.coalition_audited = True


def admin_audit_install(site=None) -> int:
    """Put the audit wrappers around every registered ModelAdmin (once each). Returns how
    many were wrapped now."""
    from django.contrib import admin

    site = site or admin.site
    wrapped = 0
    for model, model_admin in site._registry.items():
        if model._meta.label_lower in NOT_AUDITED or getattr(
            model_admin, "coalition_audited", False
        ):
            continue
        _audited_admin(model_admin)
        wrapped += 1
    return wrapped
