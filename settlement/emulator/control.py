"""The emulator's control routes, for tests and tooling (no API key needed).

``GET /_coalition/health``
    ``{"status": "ok"}`` once the emulator answers.
``POST /_coalition/faults``
    Inject a fault; JSON body (only ``path_prefix`` and ``mode`` are required)::

        {"path_prefix": "/v1/transfers",  # matches request paths starting with it
         "mode": "error_500" | "timeout" | "lost_response",
         "method": "POST",                # default POST; "*" or null: any method
         "count": 1,                      # how many matching requests it hits
         "delay_seconds": 30,             # timeout only: how long to sleep
         "lost_as": "disconnect"}         # lost_response only: or "error_500"

    Answers 201 with the fault (plus its ``id``), 400 ``{"error": ...}`` if invalid.
``GET /_coalition/faults``
    ``{"faults": [...]}``, those not yet used up.
``DELETE /_coalition/faults``
    Clear them; ``{"cleared": n}``.
``POST /_coalition/disputes``
    Open a dispute on a succeeded charge, as a cardholder would; JSON body::

        {"payment_intent": "pi_..."   # or "charge": "ch_..."
         "amount": 1000,              # default: what is left unrefunded
         "reason": "fraudulent",      # default
         "status": "needs_response"}  # default; "warning_needs_response": an inquiry

    Answers 201 with the dispute, 400 (Stripe's error body) if invalid.
``POST /_coalition/disputes/{id}``
    ``{"status": "won" | "lost" | "under_review" | ...}``: the card network's decision;
    answers the dispute.
``DELETE /_coalition/data``
    Wipe all state: localstripe's objects, account ownership, idempotency records, faults
    and registered webhooks. ``{"reset": true}``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from aiohttp import web
from localstripe import webhooks as ls_webhooks
from localstripe.resources import store

from .middleware import CONTROL_PREFIX, FaultRegistry, IdempotencyStore
from .resources import Dispute


@dataclass
class EmulatorState:
    """What the emulator keeps beside localstripe's store."""

    faults: FaultRegistry = field(default_factory=FaultRegistry)
    idempotency: IdempotencyStore = field(default_factory=IdempotencyStore)

    def reset(self) -> None:
        store.clear()
        # localstripe has no API to forget webhooks; its registry is this module dict.
        ls_webhooks._webhooks.clear()
        _cancel_pending_deliveries()
        self.faults.clear()
        self.idempotency.clear()


def _cancel_pending_deliveries() -> None:
    """Drop the webhook deliveries localstripe has scheduled but not sent yet.

    It sends each event a second after it happened, to the webhooks registered *then*: a
    test that resets and registers its own webhook would otherwise receive the previous
    test's events.
    """
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:  # no running event loop, hence nothing scheduled
        return
    for task in tasks:
        if getattr(task.get_coro(), "cr_code", None) is ls_webhooks._send_webhook.__code__:
            task.cancel()


def _bad_request(message: str) -> web.Response:
    return web.json_response(
        {"error": {"type": "invalid_request_error", "message": message}}, status=400
    )


def add_routes(router: web.UrlDispatcher, state: EmulatorState) -> None:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def add_fault(request: web.Request) -> web.Response:
        try:
            data = await request.json()
        except json.JSONDecodeError:
            return _bad_request("the body must be a JSON object")
        try:
            fault = state.faults.add(data)
        except ValueError as error:
            return _bad_request(str(error))
        return web.json_response(fault.to_json(), status=201)

    async def list_faults(request: web.Request) -> web.Response:
        return web.json_response({"faults": [f.to_json() for f in state.faults.faults]})

    async def clear_faults(request: web.Request) -> web.Response:
        return web.json_response({"cleared": state.faults.clear()})

    async def open_dispute(request: web.Request) -> web.Response:
        try:
            data = await request.json()
        except json.JSONDecodeError:
            return _bad_request("the body must be a JSON object")
        if not isinstance(data, dict):
            return _bad_request("the body must be a JSON object")
        return web.json_response(Dispute._open(**data)._export(), status=201)

    async def move_dispute(request: web.Request) -> web.Response:
        try:
            data = await request.json()
        except json.JSONDecodeError:
            return _bad_request("the body must be a JSON object")
        if not isinstance(data, dict) or set(data) != {"status"}:
            return _bad_request('the body must be {"status": ...}')
        dispute = Dispute._api_retrieve(request.match_info["id"])
        dispute._move(data["status"])
        return web.json_response(dispute._export())

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        return web.json_response({"reset": True})

    router.add_get(CONTROL_PREFIX + "health", health)
    router.add_post(CONTROL_PREFIX + "faults", add_fault)
    router.add_get(CONTROL_PREFIX + "faults", list_faults)
    router.add_delete(CONTROL_PREFIX + "faults", clear_faults)
    router.add_post(CONTROL_PREFIX + "disputes", open_dispute)
    router.add_post(CONTROL_PREFIX + "disputes/{id}", move_dispute)
    router.add_delete(CONTROL_PREFIX + "data", reset)
