"""A local Stripe emulator for tests, the demo and integrators. Dev-only.

It is `localstripe <https://github.com/adrienverge/localstripe>`_ 1.15.10 (GPL-3.0, a dev
dependency, never imported by production code), unmodified, extended at run time with what
Coalition's settlement needs and localstripe lacks:

* Connect accounts (``/v1/accounts``), transfers (``/v1/transfers``) and transfer reversals
  (``/v1/transfers/{id}/reversals``), with ``transfer.created`` / ``transfer.reversed`` /
  ``transfer.updated`` / ``account.updated`` webhooks through localstripe's own mechanism
  (:mod:`.resources`);
* PaymentIntents that also accept ``description``, ``transfer_group``,
  ``statement_descriptor``, ``statement_descriptor_suffix`` and ``receipt_email``, and answer
  a decline with Stripe's ``card_error`` body (:mod:`.resources`);
* refunds that Stripe would refuse (more than what remains, a charged-back charge) refused,
  with ``reason`` and ``charge.refunded``; disputes (``/v1/disputes``, opened and decided
  through the control routes) and the charge's ``disputed`` field (:mod:`.resources`);
* ``Idempotency-Key`` replay on every POST (:mod:`.middleware`);
* ``Stripe-Account`` scoping of every object except accounts (:mod:`.scoping`);
* errors in Stripe's JSON shape, so the ``stripe`` package raises the right exception;
* fault injection and reset for tests (:mod:`.control`).

Run it with ``python manage.py stripe_emulator`` or ``python -m settlement.emulator``; from
Python, :func:`serve` (blocking), :func:`start_in_thread`, or
:class:`~settlement.emulator.client.EmulatorProcess` (a child process, used by the test
fixture). It listens on loopback only and starts with empty state.

Importing this package is cheap: the names below load their module on first use, so a
process that only drives an emulator (the test fixture, through :mod:`.client`) never
imports localstripe or aiohttp.
"""

from importlib import import_module

_EXPORTS = {
    "EmulatorControl": "client",
    "EmulatorControlError": "client",
    "EmulatorProcess": "client",
    "DEFAULT_HOST": "server",
    "DEFAULT_PORT": "server",
    "READY_LINE": "server",
    "BackgroundEmulator": "server",
    "EmulatorStartError": "server",
    "build_app": "server",
    "parse_port": "server",
    "serve": "server",
    "start_in_thread": "server",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
