"""Admin actions on members' personal data (issue 9): export as JSON, erase (after a
confirmation page). Both go through the services; erasure is in the audit trail."""

import json

from django.contrib import admin, messages
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse
from django.template.response import TemplateResponse

from . import services
from .errors import CoalitionError


@admin.action(description="Export personal data (JSON)", permissions=["view"])
def export_personal_data(modeladmin, request, queryset):
    """Everything held about the selected members, as one JSON download."""
    from .audit import audit_record

    exports = {}
    for member in queryset.order_by("id"):
        exports[member.member_number] = services.member_export(member)
        audit_record(
            actor=request.user,
            action="member.export",
            object_type="coalition.member",
            object_id=member.pk,
        )
    response = HttpResponse(
        json.dumps(exports, cls=DjangoJSONEncoder, indent=2, ensure_ascii=False),
        content_type="application/json; charset=utf-8",
    )
    name = next(iter(exports)) if len(exports) == 1 else "members"
    response["Content-Disposition"] = f'attachment; filename="personal-data-{name}.json"'
    return response


@admin.action(description="Erase personal data (irreversible)", permissions=["change"])
def erase_personal_data(modeladmin, request, queryset):
    """Ask for confirmation, then anonymise each selected member (points forfeited)."""
    if request.POST.get("confirm_erase") != "yes":
        context = {
            **modeladmin.admin_site.each_context(request),
            "title": "Erase personal data",
            "members": queryset.order_by("id"),
            "opts": modeladmin.model._meta,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/coalition/member/erase_confirmation.html", context)
    erased = 0
    for member in queryset.order_by("id"):
        try:
            services.member_erase(member=member, staff_user=request.user)
        except CoalitionError as error:
            modeladmin.message_user(request, f"{member}: {error.message}", messages.ERROR)
        else:
            erased += 1
    modeladmin.message_user(request, f"Erased {erased} member(s).", messages.SUCCESS)
    return None
