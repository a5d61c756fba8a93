"""The local Stripe emulator, driven over HTTP by the official ``stripe`` package.

Each test starts from empty emulator state (the ``stripe_client`` fixture resets it). No
database is used.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import stripe

from settlement.emulator.client import READY_PATTERN

# Also declared by the root conftest once it lists the plugin; declaring it twice is harmless.
pytest_plugins = ["tests.stripe_emulator"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _account(client: stripe.StripeClient, **params) -> stripe.Account:
    return client.v1.accounts.create(params={"type": "express", "country": "FR", **params})


def _transfer_params(destination: str, **params) -> dict:
    return {"amount": 1250, "currency": "eur", "destination": destination, **params}


# --------------------------------------------------------------------------- accounts


def test_account_is_created_retrieved_and_listed(stripe_client):
    account = _account(stripe_client, email="shop@example.com", metadata={"partner_id": "7"})

    assert account.id.startswith("acct_")
    assert account.object == "account"
    assert (account.type, account.country, account.default_currency) == ("express", "FR", "eur")
    assert account.email == "shop@example.com"
    assert account.charges_enabled and account.payouts_enabled
    assert account.metadata.to_dict() == {"partner_id": "7"}

    assert stripe_client.v1.accounts.retrieve(account.id).email == "shop@example.com"
    other = _account(stripe_client)
    listed = stripe_client.v1.accounts.list()
    assert listed.object == "list"
    assert [a.id for a in listed.data] == [other.id, account.id]  # newest first


def test_unknown_account_is_a_permission_error_as_on_stripe(stripe_client):
    with pytest.raises(stripe.PermissionError):
        stripe_client.v1.accounts.retrieve("acct_missing")


# --------------------------------------------------------------------------- transfers


def test_transfer_to_an_account_and_list_by_transfer_group(stripe_client):
    account = _account(stripe_client)
    other = _account(stripe_client)
    first = stripe_client.v1.transfers.create(
        params=_transfer_params(
            account.id, transfer_group="settlement-1", metadata={"run": "1"}, description="May"
        )
    )
    stripe_client.v1.transfers.create(
        params=_transfer_params(other.id, transfer_group="settlement-2")
    )
    third = stripe_client.v1.transfers.create(
        params=_transfer_params(other.id, amount=99, transfer_group="settlement-1")
    )

    assert first.id.startswith("tr_")
    assert (first.amount, first.currency, first.destination) == (1250, "eur", account.id)
    assert (first.amount_reversed, first.reversed) == (0, False)
    assert first.metadata.to_dict() == {"run": "1"}
    assert stripe_client.v1.transfers.retrieve(first.id).description == "May"

    group = stripe_client.v1.transfers.list(params={"transfer_group": "settlement-1"})
    assert group.object == "list"
    assert group.url == "/v1/transfers"
    assert [t.id for t in group.data] == [third.id, first.id]
    assert group.has_more is False

    to_other = stripe_client.v1.transfers.list(params={"destination": other.id, "limit": 1})
    assert len(to_other.data) == 1 and to_other.has_more is True
    rest = stripe_client.v1.transfers.list(
        params={"destination": other.id, "starting_after": to_other.data[0].id}
    )
    assert len(rest.data) == 1 and rest.has_more is False


def test_transfer_and_account_updates_merge_metadata(stripe_client):
    account = _account(stripe_client, metadata={"partner_id": "7", "tier": "gold"})
    transfer = stripe_client.v1.transfers.create(
        params=_transfer_params(account.id, metadata={"run": "1", "line": "4"})
    )

    updated = stripe_client.v1.transfers.update(
        transfer.id, params={"description": "June", "metadata": {"line": "", "batch": "b"}}
    )
    assert updated.description == "June"
    assert updated.metadata.to_dict() == {"run": "1", "batch": "b"}
    account = stripe_client.v1.accounts.update(
        account.id, params={"email": "new@example.com", "metadata": {"tier": ""}}
    )
    assert account.email == "new@example.com"
    assert account.metadata.to_dict() == {"partner_id": "7"}
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.transfers.update(transfer.id, params={"amount": 1})
    assert raised.value.param == "amount"


def test_transfer_to_a_missing_account_is_an_invalid_request(stripe_client):
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.transfers.create(params=_transfer_params("acct_missing"))

    assert raised.value.http_status == 400
    assert raised.value.param == "destination"
    assert "No such destination" in raised.value.user_message
    assert stripe_client.v1.transfers.list().data == []


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"amount": None}, "amount"),
        ({"amount": -5}, "amount"),
        ({"currency": "euros"}, "currency"),
        ({"application_fee": 3}, "application_fee"),
    ],
)
def test_invalid_transfer_parameters_are_named(stripe_client, params, param):
    account = _account(stripe_client)
    transfer = {
        k: v for k, v in {**_transfer_params(account.id), **params}.items() if v is not None
    }

    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.transfers.create(params=transfer)

    assert raised.value.param == param


def test_reversals_update_the_transfer(stripe_client):
    account = _account(stripe_client)
    transfer = stripe_client.v1.transfers.create(params=_transfer_params(account.id))

    partial = stripe_client.v1.transfers.reversals.create(transfer.id, params={"amount": 250})
    assert partial.id.startswith("trr_")
    assert (partial.object, partial.amount, partial.transfer) == (
        "transfer_reversal",
        250,
        transfer.id,
    )
    after_partial = stripe_client.v1.transfers.retrieve(transfer.id)
    assert (after_partial.amount_reversed, after_partial.reversed) == (250, False)

    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.transfers.reversals.create(transfer.id, params={"amount": 5000})
    assert raised.value.param == "amount"

    rest = stripe_client.v1.transfers.reversals.create(transfer.id)  # no amount: the rest
    assert rest.amount == 1000
    reversed_transfer = stripe_client.v1.transfers.retrieve(transfer.id)
    assert (reversed_transfer.amount_reversed, reversed_transfer.reversed) == (1250, True)
    assert [r.id for r in reversed_transfer.reversals.data] == [rest.id, partial.id]

    listed = stripe_client.v1.transfers.reversals.list(transfer.id)
    assert [r.id for r in listed.data] == [rest.id, partial.id]
    assert stripe_client.v1.transfers.reversals.retrieve(transfer.id, partial.id).amount == 250
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.transfers.reversals.create(transfer.id)  # nothing left


# --------------------------------------------------------------------------- idempotency


def test_same_idempotency_key_replays_the_same_response(stripe_client):
    account = _account(stripe_client)
    params = _transfer_params(account.id, transfer_group="g")
    options = {"idempotency_key": "settlement-line-1"}

    first = stripe_client.v1.transfers.create(params=params, options=options)
    second = stripe_client.v1.transfers.create(params=params, options=options)

    assert second.id == first.id
    assert second.to_dict() == first.to_dict()
    assert second.last_response.headers.get("Idempotent-Replayed") == "true"
    assert first.last_response.headers.get("Idempotent-Replayed") is None
    assert [t.id for t in stripe_client.v1.transfers.list().data] == [first.id]


def test_same_idempotency_key_with_other_parameters_is_an_idempotency_error(stripe_client):
    account = _account(stripe_client)
    options = {"idempotency_key": "settlement-line-2"}
    stripe_client.v1.transfers.create(params=_transfer_params(account.id), options=options)

    with pytest.raises(stripe.IdempotencyError):
        stripe_client.v1.transfers.create(
            params=_transfer_params(account.id, amount=1), options=options
        )
    with pytest.raises(stripe.IdempotencyError):  # same parameters, other account
        stripe_client.v1.customers.create(options={**options, "stripe_account": account.id})
    assert len(stripe_client.v1.transfers.list().data) == 1


def test_concurrent_requests_with_one_key_execute_once(stripe_client, stripe_emulator):
    account = _account(stripe_client)
    results: list[tuple[int, str]] = []

    def post() -> None:
        response = requests.post(
            stripe_emulator.url + "/v1/transfers",
            data=_transfer_params(account.id),
            auth=(stripe_emulator.api_key, ""),
            headers={"Idempotency-Key": "concurrent"},
            timeout=10,
        )
        results.append((response.status_code, response.json()["id"]))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 8
    assert {status for status, _ in results} == {200}
    assert len({transfer_id for _, transfer_id in results}) == 1
    assert len(stripe_client.v1.transfers.list().data) == 1


# --------------------------------------------------------------------------- Stripe-Account


def test_objects_created_for_a_connected_account_are_only_visible_to_it(
    stripe_client, stripe_emulator
):
    account = _account(stripe_client)
    other = _account(stripe_client)
    as_account = stripe_emulator.client(stripe_account=account.id)
    as_other = stripe_emulator.client(stripe_account=other.id)

    customer = as_account.v1.customers.create(params={"email": "member@example.com"})
    payout = as_account.v1.payouts.create(params={"amount": 500, "currency": "eur"})
    transfer = as_account.v1.transfers.create(params=_transfer_params(other.id))

    assert as_account.v1.customers.retrieve(customer.id).id == customer.id
    assert [c.id for c in as_account.v1.customers.list().data] == [customer.id]
    assert [p.id for p in as_account.v1.payouts.list().data] == [payout.id]
    assert [t.id for t in as_account.v1.transfers.list().data] == [transfer.id]
    for outsider in (stripe_client, as_other):
        assert outsider.v1.customers.list().data == []
        assert outsider.v1.payouts.list().data == []
        assert outsider.v1.transfers.list().data == []
        with pytest.raises(stripe.InvalidRequestError):
            outsider.v1.customers.retrieve(customer.id)
        with pytest.raises(stripe.InvalidRequestError):
            outsider.v1.transfers.retrieve(transfer.id)
    # Accounts themselves are platform objects, visible whatever the header.
    assert as_other.v1.accounts.retrieve(account.id).id == account.id

    with pytest.raises(stripe.PermissionError):
        stripe_emulator.client(stripe_account="acct_missing").v1.customers.list()


# --------------------------------------------------------------------------- faults


def test_error_500_fault_does_nothing(stripe_client, stripe_emulator):
    account = _account(stripe_client)
    stripe_emulator.inject_fault("/v1/transfers", "error_500")

    with pytest.raises(stripe.APIError) as raised:
        stripe_client.v1.transfers.create(params=_transfer_params(account.id))

    assert raised.value.http_status == 500
    assert stripe_client.v1.transfers.list().data == []  # nothing done, fault used up
    stripe_client.v1.transfers.create(params=_transfer_params(account.id))
    assert len(stripe_client.v1.transfers.list().data) == 1


def test_timeout_fault_outlasts_the_client_and_does_nothing(stripe_client, stripe_emulator):
    account = _account(stripe_client)
    stripe_emulator.inject_fault("/v1/transfers", "timeout", delay_seconds=2)
    impatient = stripe_emulator.client(timeout=0.5)

    started = time.monotonic()
    with pytest.raises(stripe.APIConnectionError):
        impatient.v1.transfers.create(
            params=_transfer_params(account.id), options={"idempotency_key": "slow"}
        )

    assert time.monotonic() - started < 1.5
    assert stripe_client.v1.transfers.list().data == []
    # Nothing was stored under the key either: the retry runs for real.
    retried = impatient.v1.transfers.create(
        params=_transfer_params(account.id), options={"idempotency_key": "slow"}
    )
    assert retried.last_response.headers.get("Idempotent-Replayed") is None
    assert [t.id for t in stripe_client.v1.transfers.list().data] == [retried.id]


@pytest.mark.parametrize(
    ("lost_as", "error"),
    [("disconnect", stripe.APIConnectionError), ("error_500", stripe.APIError)],
)
def test_lost_response_then_retry_with_the_same_key_gives_one_transfer(
    stripe_client, stripe_emulator, lost_as, error
):
    account = _account(stripe_client)
    stripe_emulator.inject_fault("/v1/transfers", "lost_response", lost_as=lost_as)
    params = _transfer_params(account.id, transfer_group="run-9")
    options = {"idempotency_key": "settlement-line-9"}

    with pytest.raises(error):
        stripe_client.v1.transfers.create(params=params, options=options)
    [created] = stripe_client.v1.transfers.list().data  # it was done all the same

    retried = stripe_client.v1.transfers.create(params=params, options=options)

    assert retried.id == created.id
    assert retried.last_response.headers.get("Idempotent-Replayed") == "true"
    assert len(stripe_client.v1.transfers.list().data) == 1


def test_client_retries_recover_a_lost_response_transparently(stripe_client, stripe_emulator):
    account = _account(stripe_client)
    stripe_emulator.inject_fault("/v1/transfers", "lost_response")
    patient = stripe_emulator.client(max_network_retries=2)

    transfer = patient.v1.transfers.create(params=_transfer_params(account.id))

    assert [t.id for t in stripe_client.v1.transfers.list().data] == [transfer.id]


def test_faults_are_listed_and_cleared(stripe_emulator):
    stripe_emulator.reset()
    stripe_emulator.inject_fault("/v1/transfers", "error_500", count=3)
    stripe_emulator.inject_fault("/v1/", "timeout", method=None)

    assert [f["mode"] for f in stripe_emulator.control.faults()] == ["error_500", "timeout"]
    assert stripe_emulator.clear_faults() == 2
    assert stripe_emulator.control.faults() == []


def test_an_invalid_fault_is_refused(stripe_emulator):
    from settlement.emulator.client import EmulatorControlError

    with pytest.raises(EmulatorControlError, match="mode must be one of"):
        stripe_emulator.inject_fault("/v1/transfers", "explode")


# --------------------------------------------------------------------------- payment intents


def test_off_session_payment_intent_with_a_good_card_succeeds(stripe_client):
    customer = stripe_client.v1.customers.create(params={"email": "partner@example.com"})

    intent = stripe_client.v1.payment_intents.create(
        params={
            "amount": 4200,
            "currency": "eur",
            "customer": customer.id,
            "payment_method": "pm_card_visa",
            "off_session": True,
            "confirm": True,
            "metadata": {"invoice": "inv-1"},
            "transfer_group": "settlement-1",
            "description": "Points issued in May",
        }
    )

    assert intent.status == "succeeded"
    stored = stripe_client.v1.payment_intents.retrieve(intent.id)
    assert stored.metadata.to_dict() == {"invoice": "inv-1"}
    assert (stored.transfer_group, stored.description) == ("settlement-1", "Points issued in May")
    assert stored.latest_charge.transfer_group == "settlement-1"


def test_off_session_payment_intent_with_a_failing_card_is_a_card_error(stripe_client):
    customer = stripe_client.v1.customers.create(params={"email": "partner@example.com"})

    with pytest.raises(stripe.CardError) as raised:
        stripe_client.v1.payment_intents.create(
            params={
                "amount": 4200,
                "currency": "eur",
                "customer": customer.id,
                "payment_method": "pm_card_chargeCustomerFail",
                "off_session": True,
                "confirm": True,
                "transfer_group": "settlement-1",
            }
        )

    assert raised.value.code == "card_declined"
    failed = raised.value.error.payment_intent
    assert failed.status == "requires_payment_method"
    assert stripe_client.v1.payment_intents.retrieve(failed.id).transfer_group == "settlement-1"


def test_payment_intent_parameters_the_emulator_cannot_honour_are_refused(stripe_client):
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.payment_intents.create(
            params={"amount": 100, "currency": "eur", "application_fee_amount": 10}
        )
    assert raised.value.param == "application_fee_amount"


# --------------------------------------------------------------------------- webhooks, misc


class _WebhookSink(BaseHTTPRequestHandler):
    received: list[tuple[bytes, str]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((body, self.headers["Stripe-Signature"]))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass  # keep the test output clean


def test_transfer_events_are_delivered_as_signed_webhooks(stripe_client, stripe_emulator):
    _WebhookSink.received = []
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _WebhookSink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    secret = "whsec_emulator_test"
    try:
        stripe_emulator.register_webhook(
            "settlement",
            f"http://127.0.0.1:{sink.server_address[1]}/",
            secret,
            events=["transfer.created", "transfer.reversed"],
        )
        account = _account(stripe_client)
        transfer = stripe_client.v1.transfers.create(params=_transfer_params(account.id))
        stripe_client.v1.transfers.reversals.create(transfer.id, params={"amount": 50})

        deadline = time.monotonic() + 5
        while len(_WebhookSink.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sink.shutdown()
        sink.server_close()

    events = [
        stripe.Webhook.construct_event(body, signature, secret)  # checks the signature
        for body, signature in _WebhookSink.received
    ]
    assert sorted(e.type for e in events) == ["transfer.created", "transfer.reversed"]
    assert {e.data.object.id for e in events} == {transfer.id}
    reversed_event = next(e for e in events if e.type == "transfer.reversed")
    assert reversed_event.data.object.id == transfer.id
    assert reversed_event.data.object.amount_reversed == 50


def test_an_unknown_route_is_a_stripe_shaped_error(stripe_client):
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.raw_request("get", "/v1/no_such_things")
    assert raised.value.http_status == 404
    assert "Unrecognized request URL" in raised.value.user_message


def test_reset_wipes_objects_and_idempotency_records(stripe_client, stripe_emulator):
    account = _account(stripe_client)
    options = {"idempotency_key": "before-reset"}
    before = stripe_client.v1.transfers.create(params=_transfer_params(account.id), options=options)

    stripe_emulator.reset()

    assert stripe_client.v1.accounts.list().data == []
    account = _account(stripe_client)
    after = stripe_client.v1.transfers.create(params=_transfer_params(account.id), options=options)
    assert after.id != before.id


# --------------------------------------------------------------------------- the command


def _manage(*args: str) -> list[str]:
    return [sys.executable, str(PROJECT_ROOT / "manage.py"), "stripe_emulator", *args]


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) with a socket listening on ``port``."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as rows:
            next(rows)
            for row in rows:
                local, state = row.split()[1], row.split()[3]
                address, port_hex = local.rsplit(":", 1)
                if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                    addresses.add(address)
    return addresses


def test_management_command_announces_itself_and_listens_on_loopback_only():
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("reads the listening sockets from /proc/net/tcp (Linux)")
    process = subprocess.Popen(
        _manage("--port", "0"),
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline().rstrip("\n")
        match = READY_PATTERN.match(line)
        assert match, line
        url = match.group(1)
        port = int(url.rsplit(":", 1)[1])

        assert requests.get(url + "/_coalition/health", timeout=5).json() == {"status": "ok"}
        assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, and nothing else
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0  # SIGTERM is a clean stop


def _busy_port() -> tuple[socket.socket, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, str(sock.getsockname()[1])


@pytest.mark.parametrize("port", ["abc", "70000", "-1", "busy"])
def test_management_command_refuses_a_bad_port_in_one_line(port):
    busy = None
    if port == "busy":
        busy, port = _busy_port()
    try:
        result = subprocess.run(
            _manage("--port", port), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30
        )
    finally:
        if busy is not None:
            busy.close()

    assert result.returncode != 0
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert port in result.stderr
