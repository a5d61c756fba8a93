"""Pytest plugin: the local Stripe emulator, for tests that talk to "Stripe" over HTTP.

Enable it with ``pytest_plugins = ["tests.stripe_emulator"]`` (in the root conftest).

Fixtures
--------
``stripe_emulator`` (session)
    The emulator in a child process (``python -m settlement.emulator --port 0``) on a free
    127.0.0.1 port, stopped at the end of the session. A :class:`StripeEmulator`: ``.url``,
    ``.api_key``, ``.reset()``, ``.inject_fault(...)``, ``.clear_faults()``,
    ``.register_webhook(...)`` and ``.client(...)`` for a ``stripe.StripeClient`` with other
    options (retries, timeout, connected account).
``stripe_client`` (function)
    Resets the emulator, then gives ``stripe.StripeClient(api_key, base_addresses={"api":
    url})``. stripe 16 objects are not dicts: use attributes or ``.to_dict()``. That client
    does not retry (``max_network_retries`` left unset is 0 for a ``StripeClient``), so a
    test sees each failure it injects.

No database is involved.
"""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from settlement.emulator.client import EmulatorProcess

#: Any ``sk_...`` key is accepted; this one is recognisable in logs.
API_KEY = "sk_test_coalition_emulator"


class StripeEmulator:
    """A running emulator, as handed to tests."""

    def __init__(self, process: EmulatorProcess, api_key: str = API_KEY):
        self.process = process
        self.url = process.url
        self.api_key = api_key
        self.control = process.control

    def reset(self) -> None:
        """Wipe all state: objects, idempotency records, faults, webhooks."""
        self.control.reset()

    def inject_fault(
        self,
        path_prefix: str,
        mode: str,
        *,
        method: str | None = "POST",
        count: int = 1,
        delay_seconds: float | None = None,
        lost_as: str | None = None,
    ) -> dict[str, Any]:
        """Make the next ``count`` requests whose path starts with ``path_prefix`` fail.

        ``mode``: ``"error_500"`` (500, nothing done), ``"timeout"`` (sleeps
        ``delay_seconds``, default 30, then nothing done; give the client a shorter
        timeout) or ``"lost_response"`` (done, idempotency record stored, then the
        connection is dropped - or a 500 with ``lost_as="error_500"``).
        """
        return self.control.inject_fault(
            path_prefix,
            mode,
            method=method,
            count=count,
            delay_seconds=delay_seconds,
            lost_as=lost_as,
        )

    def clear_faults(self) -> int:
        return self.control.clear_faults()

    def register_webhook(
        self, webhook_id: str, url: str, secret: str, events: list[str] | None = None
    ) -> None:
        """Deliver events (signed with ``secret``) to ``url``, about a second after each."""
        self.control.register_webhook(webhook_id, url, secret, events)

    def client(
        self,
        *,
        max_network_retries: int | None = None,
        timeout: float | None = None,
        stripe_account: str | None = None,
    ) -> stripe.StripeClient:
        """A ``StripeClient`` on the emulator, with the given retries, timeout (seconds)
        and connected account (sent as ``Stripe-Account`` on every request)."""
        http_client = None if timeout is None else stripe.RequestsClient(timeout=timeout)
        return stripe.StripeClient(
            self.api_key,
            base_addresses={"api": self.url},
            max_network_retries=max_network_retries,
            http_client=http_client,
            stripe_account=stripe_account,
        )


@pytest.fixture(scope="session")
def stripe_emulator():
    process = EmulatorProcess.start(port=0)
    try:
        yield StripeEmulator(process)
    finally:
        process.stop()


@pytest.fixture
def stripe_client(stripe_emulator: StripeEmulator) -> stripe.StripeClient:
    stripe_emulator.reset()
    return stripe.StripeClient(stripe_emulator.api_key, base_addresses={"api": stripe_emulator.url})
