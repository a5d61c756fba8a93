"""Admin for purchase files (issue 8): upload a partner's end-of-day CSV, follow its progress,
download the per-row result. Registered from partners/admin.py (one import line there)."""

import uuid
from pathlib import Path

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import FileResponse, Http404
from django.urls import path, reverse
from django.utils.html import format_html

from .imports import (
    DEFAULT_CHUNK,
    ImportFileError,
    import_dir,
    purchase_file_scan,
    purchase_import_create,
    purchase_import_enqueue,
    purchase_import_failure,
)
from .models import PurchaseImport


class PurchaseImportForm(forms.ModelForm):
    upload = forms.FileField(
        label="CSV file",
        help_text="Columns: idempotency_key, member_number, amount, currency, reference; "
        "optional occurred_at, store_code, line_items (JSON).",
    )

    class Meta:
        model = PurchaseImport
        fields = ["partner", "chunk_size"]

    def clean(self):
        cleaned = super().clean()
        upload = cleaned.get("upload")
        if upload is None:
            return cleaned
        # Saved where the workers read it; a file that cannot be imported is not kept.
        name = Path(upload.name).name
        target = import_dir() / "uploads" / f"{uuid.uuid4().hex}-{name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            for part in upload.chunks():
                out.write(part)
        try:
            self.scan = purchase_file_scan(
                path=target, chunk_size=cleaned.get("chunk_size") or DEFAULT_CHUNK
            )
        except ImportFileError as exc:
            target.unlink(missing_ok=True)
            raise ValidationError(str(exc).replace(target.name, name)) from exc
        self.saved_path, self.original_name = target, name
        return cleaned


@admin.register(PurchaseImport)
class PurchaseImportAdmin(admin.ModelAdmin):
    form = PurchaseImportForm
    list_display = ["id", "partner", "file_name", "status", "progress", "accepted", "rejected",
                    "created_at", "finished_at", "result"]  # fmt: skip
    list_filter = ["status", "partner"]
    shown = ["partner", "file_name", "status", "progress", "accepted", "rejected", "chunk_size",
             "created_at", "finished_at", "result", "failure"]  # fmt: skip

    def get_fields(self, request, obj=None):
        return ["partner", "chunk_size", "upload"] if obj is None else self.shown

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.shown

    def has_change_permission(self, request, obj=None):
        return False  # an import is a record of what happened: look, don't touch

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="processed")
    def progress(self, obj):
        return f"{obj.processed_rows}/{obj.total_rows}"

    @admin.display(description="why it failed")
    def failure(self, obj):
        return purchase_import_failure(purchase_import=obj) or "—"

    @admin.display(description="result")
    def result(self, obj):
        if obj.status != PurchaseImport.Status.COMPLETED:
            return "—"
        url = reverse("admin:partners_purchaseimport_result", args=[obj.pk])
        return format_html('<a href="{}">result CSV</a>', url)

    def save_model(self, request, obj, form, change):
        created = purchase_import_create(
            partner=form.cleaned_data["partner"],
            path=form.saved_path,
            name=form.original_name,
            chunk_size=form.cleaned_data.get("chunk_size") or DEFAULT_CHUNK,
            scan=form.scan,
        )
        sent = purchase_import_enqueue(purchase_import=created)
        # The admin goes on with `obj` (its message, log entry and redirect).
        obj.__dict__.update({k: v for k, v in created.__dict__.items() if k != "_state"})
        obj._state.adding = False
        messages.info(request, f"{created.total_rows} rows in {sent} chunks sent to the workers.")

    def get_urls(self):
        own = [
            path(
                "<int:import_id>/result/",
                self.admin_site.admin_view(self.result_view),
                name="partners_purchaseimport_result",
            )
        ]
        return own + super().get_urls()

    def result_view(self, request, import_id: int):
        if not self.has_view_permission(request):
            raise Http404
        found = PurchaseImport.objects.filter(pk=import_id).first()
        if found is None or not Path(found.result_path).is_file():
            raise Http404("No result for this import yet")
        return FileResponse(
            open(found.result_path, "rb"),  # noqa: SIM115 - FileResponse closes it
            as_attachment=True,
            filename=f"import-{found.pk}-result.csv",
        )
