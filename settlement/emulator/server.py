"""Building and running the emulator: localstripe's routes plus Coalition's extensions.

localstripe's own ``start()`` binds every interface and reloads a shared pickle; here the
app is assembled afresh (localstripe's module-level ``app`` is only read, never started or
changed) and served on a loopback socket bound by the emulator itself, with empty state.

One emulator per process: localstripe keeps its objects in a module-level store.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable

import aiohttp
from aiohttp import web
from localstripe import server as ls_server

from . import control, resources, scoping
from .middleware import (
    authentication,
    connected_account,
    fault_middleware,
    idempotency_middleware,
    unknown_route,
)
from .resources import Account, CoalitionPaymentIntent, CoalitionRefund, Dispute, Transfer

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 12111
#: Printed (by the CLI and the management command) once the emulator answers HTTP.
READY_LINE = "stripe emulator on {url}"

STATE = web.AppKey("coalition_emulator_state", control.EmulatorState)

# Seconds a stopping server waits for requests in flight (an injected timeout sleeps for
# much longer, and must not hold up Ctrl-C).
_SHUTDOWN_TIMEOUT = 1.0

logger = logging.getLogger("settlement.emulator")

# Held while an emulator runs in this process (see the module docstring).
_in_process = threading.Lock()


class EmulatorStartError(RuntimeError):
    """The emulator could not start (address not loopback, port in use, ...)."""


# --------------------------------------------------------------------------- the app


def _call(func):
    """A handler passing query or form parameters and every path parameter to ``func``
    (localstripe's ``api_extra`` only knows a fixed list of path parameter names)."""

    async def handle(request: web.Request) -> web.Response:
        if request.method == "POST":
            data = dict(await ls_server.get_post_data(request) or {})
        else:
            data = dict(ls_server.unflatten_data(request.query))
        data.update(request.match_info)
        expand = data.pop("expand", None)
        return ls_server.json_response(func(**data)._export(expand=expand))

    return handle


def _as_async(handler):
    """localstripe's retrieve, list and delete handlers are plain functions, which aiohttp
    deprecates as handlers."""
    if inspect.iscoroutinefunction(handler):
        return handler

    async def handle(request: web.Request) -> web.StreamResponse:
        return handler(request)

    return handle


def _add_extension_routes(router: web.UrlDispatcher) -> None:
    # Sub-resource routes before `/{id}` ones, as localstripe orders its own.
    reversals = "/v1/transfers/{id}/reversals"
    router.add_post(reversals, _call(Transfer._api_create_reversal))
    router.add_get(reversals, _call(Transfer._api_list_reversals))
    router.add_get(reversals + "/{reversal}", _call(Transfer._api_retrieve_reversal))
    router.add_post("/v1/disputes/{id}/close", _call(Dispute._api_close))

    for cls in (Account, Transfer):
        url = f"/v1/{cls.object}s"
        router.add_post(url, ls_server.api_create(cls, url))
        router.add_get(url, _as_async(ls_server.api_list_all(cls, url)))
        router.add_get(url + "/{id}", _as_async(ls_server.api_retrieve(cls, url)))
        router.add_post(url + "/{id}", ls_server.api_update(cls, url))
    router.add_delete("/v1/accounts/{id}", _as_async(ls_server.api_delete(Account, "/v1/accounts")))
    # Disputes are opened by cardholders (here: the control route), never by a POST to the list.
    router.add_get("/v1/disputes", _as_async(ls_server.api_list_all(Dispute, "/v1/disputes")))
    router.add_get("/v1/disputes/{id}", _as_async(ls_server.api_retrieve(Dispute, "/v1/disputes")))
    router.add_post("/v1/disputes/{id}", ls_server.api_update(Dispute, "/v1/disputes"))

    # Registered before localstripe's routes, and aiohttp picks the first route matching a
    # request, so this replaces localstripe's PaymentIntent creation and nothing else.
    router.add_post(
        "/v1/payment_intents", ls_server.api_create(CoalitionPaymentIntent, "/v1/payment_intents")
    )
    router.add_post("/v1/refunds", ls_server.api_create(CoalitionRefund, "/v1/refunds"))


def _add_localstripe_routes(router: web.UrlDispatcher) -> None:
    """Copy localstripe's routes, in its order (its extra routes precede the CRUD ones)."""
    for route in ls_server.app.router.routes():
        router.add_route(route.method, route.resource.canonical, route.handler)


def build_app() -> web.Application:
    """A fresh emulator app over an emptied localstripe store.

    Not thread-safe, and the state is process-wide: build one app per process at a time.
    """
    scoping.install()
    resources.install()
    state = control.EmulatorState()
    state.reset()
    app = web.Application(
        middlewares=[
            unknown_route,
            ls_server.error_middleware,
            authentication,
            connected_account,
            fault_middleware(state.faults),
            idempotency_middleware(state.idempotency),
        ]
    )
    app[STATE] = state
    app.on_response_prepare.append(ls_server.add_cors_headers)
    control.add_routes(app.router, state)
    _add_extension_routes(app.router)
    _add_localstripe_routes(app.router)
    return app


# --------------------------------------------------------------------------- sockets


def parse_port(value: object) -> int:
    """A TCP port from user input: an integer in 0..65535 (0 picks a free port)."""
    text = str(value).strip()
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"--port must be an integer between 0 and 65535, got {value!r}")
    return int(text)


def bind_loopback(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> socket.socket:
    """A listening socket on a loopback address; port 0 picks a free port.

    Refuses any other address: the emulator accepts every ``sk_...`` key and exposes a
    reset endpoint, so it must never be reachable from the network.
    """
    if host == "localhost":
        host = DEFAULT_HOST
    try:
        address = ipaddress.ip_address(host)
    except ValueError as error:
        raise EmulatorStartError(f"host must be a loopback IP address, got {host!r}") from error
    if not address.is_loopback:
        raise EmulatorStartError(f"host must be a loopback address, got {host!r}")
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # Lets a restart reuse a port whose old connections linger in TIME_WAIT; on Linux it
    # still refuses a port another socket listens on.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise EmulatorStartError(
            f"cannot listen on {host} port {port}: {error.strerror}"
        ) from error
    sock.setblocking(False)
    return sock


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


# --------------------------------------------------------------------------- running


async def _wait_until_answering(url: str, attempts: int = 50) -> None:
    """Ask the health route until it answers, so "ready" means answering HTTP."""
    async with aiohttp.ClientSession() as session:
        for _ in range(attempts):
            try:
                async with session.get(url + "/_coalition/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass  # not accepting yet: try again shortly
            await asyncio.sleep(0.1)
    raise EmulatorStartError(f"the emulator at {url} did not answer its health check")


async def run(
    sock: socket.socket,
    stop: asyncio.Event,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve on ``sock`` until ``stop`` is set; ``on_ready(url)`` once it answers."""
    runner = web.AppRunner(
        build_app(),
        access_log=logging.getLogger("aiohttp.access"),
        handle_signals=False,
        shutdown_timeout=_SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        url = base_url(sock)
        await _wait_until_answering(url)
        if on_ready is not None:
            on_ready(url)
        await stop.wait()
    finally:
        await runner.cleanup()


def _claim_process() -> None:
    if not _in_process.acquire(blocking=False):
        raise EmulatorStartError("an emulator already runs in this process")


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run the emulator until SIGINT or SIGTERM (blocking), with state wiped at start.

    ``on_ready(url)`` is called once it answers HTTP. Raises ``EmulatorStartError`` if the
    address is not loopback or the port cannot be bound.
    """
    _claim_process()
    try:
        sock = bind_loopback(host, port)

        async def main() -> None:
            stop = asyncio.Event()
            if threading.current_thread() is threading.main_thread():
                loop = asyncio.get_running_loop()
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(signum, stop.set)
            await run(sock, stop, on_ready)

        asyncio.run(main())
    finally:
        _in_process.release()


class BackgroundEmulator:
    """The emulator on a daemon thread of this process; made by :func:`start_in_thread`,
    which holds the one-emulator-per-process claim that the thread releases."""

    def __init__(self, host: str = DEFAULT_HOST, port: int = 0):
        self.url: str | None = None
        self._sock = bind_loopback(host, port)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="stripe-emulator", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        finally:
            # Also on failure, so start() stops waiting (it then sees no url).
            self._ready.set()
            _in_process.release()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await run(self._sock, self._stop, self._on_ready)

    def _on_ready(self, url: str) -> None:
        self.url = url
        self._ready.set()

    def start(self, timeout: float = 10.0) -> str:
        self._thread.start()
        if not self._ready.wait(timeout) or self.url is None:
            raise EmulatorStartError("the emulator thread did not start; see its traceback")
        return self.url

    def stop(self, timeout: float = 5.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)


def start_in_thread(host: str = DEFAULT_HOST, port: int = 0) -> BackgroundEmulator:
    """Start the emulator on a background thread; ``.url`` is set, ``.stop()`` ends it.

    Only one emulator may run per process; a test suite that may run in parallel with
    other work should prefer a subprocess (:class:`settlement.emulator.client.EmulatorProcess`).
    """
    _claim_process()
    try:
        emulator = BackgroundEmulator(host, port)
    except BaseException:
        _in_process.release()
        raise
    emulator.start()  # the thread releases the claim when it ends
    return emulator


def configure_logging(level: int = logging.INFO) -> None:
    """Access and webhook logs to stderr, so stdout carries only the ready line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    for name in ("aiohttp.access", "settlement.emulator"):
        log = logging.getLogger(name)
        log.setLevel(level)
        log.addHandler(handler)
