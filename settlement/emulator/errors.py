"""Errors in Stripe's JSON shape, so the official ``stripe`` package raises the right class.

The package picks the exception from the status and the error ``type``: 400/404 give
``InvalidRequestError`` (``IdempotencyError`` when the type is ``idempotency_error``), 402
``CardError``, 403 ``PermissionError``, anything else ``APIError``. localstripe's own
``UserError`` already renders ``{"error": {...}}`` and its error middleware turns it into a
response, so the emulator raises ``UserError`` too and only fixes the fields localstripe
cannot set (its constructor always writes ``type = "invalid_request_error"``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from localstripe.errors import UserError

INVALID_REQUEST = "invalid_request_error"
IDEMPOTENCY = "idempotency_error"
API_ERROR = "api_error"
CARD_ERROR = "card_error"


def stripe_error(
    status: int,
    message: str,
    *,
    type: str = INVALID_REQUEST,
    param: str | None = None,
    code: str | None = None,
    **extra: Any,
) -> UserError:
    """A ``UserError`` whose body is ``{"error": {"type", "message", "param", "code", ...}}``."""
    contents: dict[str, Any] = dict(extra)
    if param is not None:
        contents["param"] = param
    if code is not None:
        contents["code"] = code
    error = UserError(status, message, contents)
    error.body["error"]["type"] = type
    return error


def error_response(status: int, message: str, *, type: str = API_ERROR) -> web.Response:
    """A ready response, for middlewares that answer without going through a handler."""
    return stripe_error(status, message, type=type).to_response()


def missing_param(name: str) -> UserError:
    return stripe_error(
        400, f"Missing required param: {name}.", param=name, code="parameter_missing"
    )


def invalid_param(name: str, message: str) -> UserError:
    return stripe_error(400, message, param=name, code="parameter_invalid")


def unknown_params(names) -> UserError:
    """Stripe names only the first unknown parameter."""
    name = sorted(names)[0]
    return stripe_error(
        400, f"Received unknown parameter: {name}", param=name, code="parameter_unknown"
    )


def no_such(noun: str, object_id: str, *, param: str = "id", status: int = 404) -> UserError:
    return stripe_error(
        status, f"No such {noun}: '{object_id}'", param=param, code="resource_missing"
    )
