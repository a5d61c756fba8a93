"""aiohttp middlewares that give localstripe what Stripe's API layer does and it lacks.

Order (outermost first), as :func:`settlement.emulator.server.build_app` installs them:

1. :func:`unknown_route` - a route that does not exist answers Stripe's JSON 404, not
   aiohttp's plain text (which the ``stripe`` package can only report as ``APIError``).
2. localstripe's ``error_middleware`` - renders ``UserError`` as JSON.
3. :func:`authentication` - localstripe's API-key check, except for the control routes.
4. :func:`connected_account` - the ``Stripe-Account`` header selects whose objects the
   request sees (see :mod:`settlement.emulator.scoping`).
5. :func:`inject_faults` - the failures a test asked for.
6. :func:`idempotency` - ``Idempotency-Key`` replay.

Faults sit outside idempotency on purpose: ``error_500`` and ``timeout`` must answer before
anything runs (so no idempotency record exists either), while ``lost_response`` lets the
request run - idempotency record included - and only loses the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import time
import weakref
from dataclasses import asdict, dataclass, field
from urllib.parse import parse_qsl

from aiohttp import web
from localstripe import server as ls_server
from localstripe.errors import UserError

from .errors import IDEMPOTENCY, error_response, stripe_error
from .resources import connected_account_exists
from .scoping import current_account

logger = logging.getLogger("settlement.emulator")

#: Prefix of the emulator's own control routes (faults, reset, health).
CONTROL_PREFIX = "/_coalition/"
API_PREFIX = "/v1/"

# Stripe keeps idempotency results for 24 hours.
IDEMPOTENCY_TTL_SECONDS = 24 * 60 * 60


async def run_handler(handler, request: web.Request) -> web.StreamResponse:
    """The handler's response, with a ``UserError`` rendered as the response it stands for.

    Idempotency and ``lost_response`` need the final status and body of a request that ran,
    whether it succeeded or was refused.
    """
    try:
        return await handler(request)
    except UserError as error:
        return error.to_response()


# --------------------------------------------------------------------------- routing, auth


@web.middleware
async def unknown_route(request: web.Request, handler):
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        if not request.path.startswith(API_PREFIX):
            raise
        return error_response(
            404,
            f"Unrecognized request URL ({request.method}: {request.path}).",
            type="invalid_request_error",
        )


@web.middleware
async def authentication(request: web.Request, handler):
    """localstripe's check (a ``sk_...`` key), except on the emulator's control routes,
    which, like localstripe's own ``/_config/`` routes, are for tests and tooling."""
    if request.path.startswith(CONTROL_PREFIX):
        return await handler(request)
    return await ls_server.auth_middleware(request, handler)


@web.middleware
async def connected_account(request: web.Request, handler):
    """Act for the account named by ``Stripe-Account``, which must exist (as on Stripe,
    where an unknown or foreign account is a 403 ``PermissionError``)."""
    account = request.headers.get("Stripe-Account") or None
    if account is not None and request.path.startswith(API_PREFIX):
        if not connected_account_exists(account):
            raise stripe_error(
                403,
                f"The provided key does not have access to account '{account}' (or that "
                "account does not exist). Application access may have been revoked.",
                code="account_invalid",
            )
    token = current_account.set(account)
    try:
        return await handler(request)
    finally:
        # aiohttp serves the requests of one keep-alive connection in one task: without the
        # reset, the next request on the connection would inherit this account.
        current_account.reset(token)


# --------------------------------------------------------------------------- faults

FAULT_MODES = ("error_500", "timeout", "lost_response")
LOST_AS = ("disconnect", "error_500")


@dataclass
class Fault:
    """One injected failure, applied to the next ``count`` matching API requests."""

    id: int
    path_prefix: str
    mode: str
    method: str | None = "POST"
    count: int = 1
    delay_seconds: float = 30.0
    lost_as: str = "disconnect"

    def matches(self, method: str, path: str) -> bool:
        return path.startswith(self.path_prefix) and self.method in (None, method)

    @classmethod
    def from_json(cls, fault_id: int, data: object) -> Fault:
        """Validate a control request; raises ``ValueError`` with a readable reason."""
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        unknown = set(data) - {"path_prefix", "mode", "method", "count", "delay_seconds", "lost_as"}
        if unknown:
            raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
        path_prefix = data.get("path_prefix")
        if not isinstance(path_prefix, str) or not path_prefix.startswith(API_PREFIX):
            raise ValueError(f"path_prefix must be a string starting with {API_PREFIX}")
        mode = data.get("mode")
        if mode not in FAULT_MODES:
            raise ValueError(f"mode must be one of {', '.join(FAULT_MODES)}")
        method = data.get("method", "POST")
        if method in (None, "*"):
            method = None  # any method
        elif not isinstance(method, str) or not method.isalpha():
            raise ValueError('method must be an HTTP method, "*" or null')
        count = data.get("count", 1)
        if type(count) is not int or count < 1:
            raise ValueError("count must be a positive integer")
        delay = data.get("delay_seconds", 30.0)
        if type(delay) not in (int, float) or not 0 < delay <= 600:
            raise ValueError("delay_seconds must be a number of seconds in (0, 600]")
        lost_as = data.get("lost_as", "disconnect")
        if lost_as not in LOST_AS:
            raise ValueError(f"lost_as must be one of {', '.join(LOST_AS)}")
        return cls(
            id=fault_id,
            path_prefix=path_prefix,
            mode=mode,
            method=method.upper() if method else None,
            count=count,
            delay_seconds=float(delay),
            lost_as=lost_as,
        )

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class FaultRegistry:
    faults: list[Fault] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def add(self, data: object) -> Fault:
        fault = Fault.from_json(next(self._ids), data)
        self.faults.append(fault)
        return fault

    def clear(self) -> int:
        cleared = len(self.faults)
        self.faults.clear()
        return cleared

    def take(self, method: str, path: str) -> Fault | None:
        """The first fault matching the request, used up by one; ``None`` if none matches.

        Counted when the request arrives, so a retry sent while a ``timeout`` fault still
        sleeps is not caught by the same fault again.
        """
        for fault in self.faults:
            if fault.matches(method, path):
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
                return fault
        return None


def fault_middleware(registry: FaultRegistry):
    @web.middleware
    async def inject_faults(request: web.Request, handler):
        fault = registry.take(request.method, request.path) if _is_api(request) else None
        if fault is None:
            return await handler(request)
        logger.info("injecting %s into %s %s", fault.mode, request.method, request.path)
        if fault.mode == "error_500":
            return error_response(500, "Injected fault: error_500 (nothing was done).")
        if fault.mode == "timeout":
            # Outlast the client's timeout, then do nothing: the client has given up.
            await asyncio.sleep(fault.delay_seconds)
            return error_response(504, "Injected fault: timeout (nothing was done).")
        # lost_response: the request really runs; only its answer is lost.
        response = await run_handler(handler, request)
        logger.info("lost_response: dropping the %s answer", response.status)
        if fault.lost_as == "error_500":
            return error_response(500, "Injected fault: lost_response (the request was done).")
        if request.transport is not None:
            request.transport.abort()
        # aiohttp fails to write it to the aborted connection and, as for any client gone
        # early, only logs the access (with the status that was lost).
        return response

    return inject_faults


def _is_api(request: web.Request) -> bool:
    return request.path.startswith(API_PREFIX)


# --------------------------------------------------------------------------- idempotency


@dataclass(frozen=True)
class StoredResponse:
    fingerprint: str
    status: int
    body: bytes
    content_type: str
    stored_at: float

    def replay(self, key: str) -> web.Response:
        return web.Response(
            status=self.status,
            body=self.body,
            content_type=self.content_type,
            headers={"Idempotency-Key": key, "Idempotent-Replayed": "true"},
        )


@dataclass
class IdempotencyStore:
    """Results of POSTs by (API key, Idempotency-Key), with a lock per key."""

    records: dict[tuple[str, str], StoredResponse] = field(default_factory=dict)
    # Weak values: a lock lives while some request holds or awaits it, then goes away.
    locks: weakref.WeakValueDictionary = field(default_factory=weakref.WeakValueDictionary)

    def lock(self, slot: tuple[str, str]) -> asyncio.Lock:
        lock = self.locks.get(slot)
        if lock is None:
            lock = asyncio.Lock()
            self.locks[slot] = lock
        return lock

    def get(self, slot: tuple[str, str]) -> StoredResponse | None:
        record = self.records.get(slot)
        if record is not None and time.time() - record.stored_at > IDEMPOTENCY_TTL_SECONDS:
            del self.records[slot]
            return None
        return record

    def clear(self) -> None:
        self.records.clear()


def _is_replayable(status: int) -> bool:
    """Which results Stripe saves: those of requests that ran. Successes, and declines
    (402: a charge was attempted). Validation errors (other 4xx) are not saved, so a
    corrected retry with the same key runs; nor are 5xx, which a retry must be able to
    repair (in particular the emulator's injected ones)."""
    return status < 400 or status == 402


async def _fingerprint(request: web.Request) -> str:
    """What makes two POSTs "the same request": method, path, acting account, parameters.

    Form parameters are compared as a sorted list, so a retry that encodes them in another
    order is still the same request.
    """
    body = await request.read()  # aiohttp caches the body: the handler can read it again
    if request.content_type == "application/x-www-form-urlencoded":
        params = json.dumps(sorted(parse_qsl(body.decode(), keep_blank_values=True)))
    else:
        try:
            params = json.dumps(json.loads(body), sort_keys=True) if body else ""
        except ValueError:
            params = body.hex()
    parts = [request.method, request.path, current_account.get() or "", params]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def idempotency_middleware(store: IdempotencyStore):
    @web.middleware
    async def idempotency(request: web.Request, handler):
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or key is None or not _is_api(request):
            return await handler(request)
        if not key or len(key) > 255:
            raise stripe_error(
                400,
                "Invalid idempotency key: must be 1 to 255 characters.",
                param="Idempotency-Key",
            )
        slot = (ls_server.get_api_key(request) or "", key)
        fingerprint = await _fingerprint(request)
        # One request per key at a time: a concurrent duplicate waits, then replays.
        async with store.lock(slot):
            record = store.get(slot)
            if record is not None:
                if record.fingerprint != fingerprint:
                    raise stripe_error(
                        400,
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with. Try using a key other than "
                        f"'{key}' if you meant to execute a different request.",
                        type=IDEMPOTENCY,
                    )
                return record.replay(key)
            response = await run_handler(handler, request)
            if _is_replayable(response.status) and isinstance(response, web.Response):
                store.records[slot] = StoredResponse(
                    fingerprint=fingerprint,
                    status=response.status,
                    body=bytes(response.body or b""),
                    content_type=response.content_type,
                    stored_at=time.time(),
                )
            response.headers["Idempotency-Key"] = key
            return response

    return idempotency
