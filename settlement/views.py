"""Settlement's HTTP endpoints.

- `/stripe/webhook/`: Stripe's webhooks. It only verifies, records and queues: processing
  (which asks Stripe for the object again) happens in a Celery task, so the answer is fast.
- `/settlement/runs/<run>/...csv`: statements and the run export, for the partner itself
  (its API key) or finance staff (staff token or staff session).
"""

import logging
from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from . import selectors
from . import stripe_gateway as gateway
from .errors import NotFound, PermissionDenied
from .services import run_lines_csv, statement_csv, stripe_event_receive

logger = logging.getLogger(__name__)


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    """POST /stripe/webhook/: 400 for a bad or stale signature, else 200 (duplicates and
    event types settlement does not handle included)."""
    try:
        event = gateway.webhook_verify(request.body, request.headers.get("Stripe-Signature"))
    except gateway.SignatureError as exc:
        logger.warning("stripe webhook refused: %s", exc)
        return JsonResponse({"error": "invalid signature"}, status=400)
    stored, is_new = stripe_event_receive(event=event)
    return JsonResponse({"received": True, "duplicate": not is_new})


# --------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class _Reader:
    partner_id: int | None = None
    is_staff: bool = False
    refusal: str = "Authentication required: a partner API key, or a finance staff token"


def _reader(request: HttpRequest) -> _Reader:
    """Who asks for a statement: the API's principal (partner key, staff token or staff
    session) when the API is installed; else a partner key or a staff session."""
    try:
        from api.core.auth import principal_of
    except ImportError:  # pragma: no cover - the API app is optional for settlement
        principal_of = None
    if principal_of is not None:
        principal = principal_of(request)
        if principal.is_partner and principal.partner.is_active:
            if "read" not in principal.scopes:
                return _Reader(refusal="This API key lacks the read scope")
            return _Reader(partner_id=principal.partner.pk)
        if principal.is_staff:
            if principal.has_perm("api.view_finance"):
                return _Reader(is_staff=True)
            return _Reader(refusal="This needs the api.view_finance permission")
        return _Reader(refusal=principal.credential_error or _Reader.refusal)
    from partners.selectors import api_key_authenticate

    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        key = api_key_authenticate(raw_key=token.strip())
        if key is not None and key.partner.is_active:
            return _Reader(partner_id=key.partner_id)
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_active and user.is_staff:
        return _Reader(is_staff=True)
    return _Reader()


def _csv_response(body: str, filename: str) -> HttpResponse:
    response = HttpResponse(body, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "private, no-store"
    return response


def _refuse(reader: _Reader, *, status: int = 403) -> HttpResponse:
    return JsonResponse(
        {"error": {"code": "PERMISSION_DENIED", "message": reader.refusal}}, status=status
    )


@require_GET
def partner_statement(request: HttpRequest, run_id: int, partner_id: int) -> HttpResponse:
    """GET /settlement/runs/<run>/statements/partner/<partner>.csv: the partner itself or
    finance staff."""
    reader = _reader(request)
    if reader.partner_id is None and not reader.is_staff:
        return _refuse(reader, status=401)
    try:
        line = selectors.statement_line(
            run_id=run_id,
            partner_id=partner_id,
            viewer_partner_id=reader.partner_id,
            viewer_is_staff=reader.is_staff,
        )
    except PermissionDenied as exc:
        return _refuse(_Reader(refusal=exc.message))
    except NotFound as exc:
        return JsonResponse({"error": {"code": "NOT_FOUND", "message": exc.message}}, status=404)
    return _csv_response(statement_csv(line=line), f"statement-run{run_id}-{line.partner.code}.csv")


@require_GET
def charity_statement(request: HttpRequest, run_id: int, charity_id: int) -> HttpResponse:
    """GET /settlement/runs/<run>/statements/charity/<charity>.csv: finance staff."""
    reader = _reader(request)
    if not reader.is_staff:
        return _refuse(reader, status=401 if reader.partner_id is None else 403)
    try:
        line = selectors.statement_line(run_id=run_id, charity_id=charity_id, viewer_is_staff=True)
    except NotFound as exc:
        return JsonResponse({"error": {"code": "NOT_FOUND", "message": exc.message}}, status=404)
    return _csv_response(statement_csv(line=line), f"statement-run{run_id}-charity{charity_id}.csv")


@require_GET
def run_lines_export(request: HttpRequest, run_id: int) -> HttpResponse:
    """GET /settlement/runs/<run>/lines.csv: every line of a run, for finance staff."""
    reader = _reader(request)
    if not reader.is_staff:
        return _refuse(reader, status=401 if reader.partner_id is None else 403)
    try:
        run = selectors.run_get(run_id=run_id)
    except NotFound as exc:
        return JsonResponse({"error": {"code": "NOT_FOUND", "message": exc.message}}, status=404)
    return _csv_response(run_lines_csv(run=run), f"settlement-run{run_id}-lines.csv")
