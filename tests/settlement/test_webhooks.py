"""/stripe/webhook/: signature over the raw body, each event once, processing that asks
Stripe (the emulator) for the object again and makes only legal moves."""

import json
import time
import uuid

import pytest
import stripe
from django.test import Client

from settlement import services
from settlement.models import ConnectedPayout, SettlementLine, SettlementRun, StripeEvent
from tests import factories

pytestmark = pytest.mark.django_db

SECRET = "whsec_settlement_tests"
URL = "/stripe/webhook/"


@pytest.fixture(autouse=True)
def webhook_secret(settings):
    settings.STRIPE_WEBHOOK_SECRET = SECRET


def event_body(event_type: str, obj: dict, *, account: str | None = None, event_id=None) -> str:
    event = {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "type": event_type,
        "data": {"object": obj},
    }
    if account:
        event["account"] = account
    return json.dumps(event)


def post(client, body: str, *, secret: str = SECRET, timestamp: int | None = None):
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp)
    return client.post(
        URL, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )


def executed(stripe_month, finance, django_capture_on_commit_callbacks):
    run = stripe_month["run"]
    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute(run=run, started_by=finance)
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.COMPLETED
    return run


def line(run, code) -> SettlementLine:
    return run.lines.get(partner__code=code)


# --------------------------------------------------------------------------- the door


def test_a_bad_signature_is_refused_and_nothing_recorded(client):
    body = event_body("transfer.reversed", {"id": "tr_1", "object": "transfer"})

    response = post(client, body, secret="whsec_someone_else")

    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_a_tampered_body_is_refused(client):
    body = event_body("transfer.reversed", {"id": "tr_1", "object": "transfer"})
    header = stripe.WebhookSignature.generate_signature_header(body, SECRET)

    response = client.post(
        URL, data=body.replace("tr_1", "tr_2"), content_type="application/json",
        HTTP_STRIPE_SIGNATURE=header,
    )  # fmt: skip

    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_a_stale_timestamp_is_refused(client):
    body = event_body("transfer.reversed", {"id": "tr_1", "object": "transfer"})

    response = post(client, body, timestamp=int(time.time()) - 301)

    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_no_signature_and_wrong_method_are_refused(client):
    body = event_body("transfer.reversed", {"id": "tr_1", "object": "transfer"})
    assert client.post(URL, data=body, content_type="application/json").status_code == 400
    assert client.get(URL).status_code == 405
    assert not StripeEvent.objects.exists()


def test_an_unknown_event_type_is_answered_200_and_ignored(
    client, django_capture_on_commit_callbacks
):
    body = event_body("customer.created", {"id": "cus_1", "object": "customer"})

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = post(client, body)

    assert response.status_code == 200
    event = StripeEvent.objects.get()
    assert event.processed_at is not None and event.outcome.startswith("ignored")
    assert callbacks == []  # no task queued


# --------------------------------------------------------------------------- processing


def test_transfer_reversed_fails_the_paid_line_with_the_reason(
    client, stripe_bed, stripe_month, finance, django_capture_on_commit_callbacks
):
    run = executed(stripe_month, finance, django_capture_on_commit_callbacks)
    payout = line(run, "REDEEMER")
    stripe_bed.client.v1.transfers.reversals.create(payout.stripe_object_id)  # in full

    body = event_body("transfer.reversed", {"id": payout.stripe_object_id, "object": "transfer"})
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, body)

    assert response.status_code == 200
    payout.refresh_from_db()
    assert (payout.status, payout.failure_code) == (
        SettlementLine.Status.FAILED,
        "transfer_reversed",
    )
    assert "reversed" in payout.failure_reason
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.PARTIALLY_FAILED
    transition = payout.transitions.last()
    assert (transition.from_status, transition.to_status) == ("paid", "failed")
    assert transition.actor_label.startswith("stripe:evt_")


def test_a_forged_event_cannot_move_a_line_without_stripe_agreeing(
    client, stripe_bed, stripe_month, finance, django_capture_on_commit_callbacks
):
    """A validly signed 'transfer.reversed' whose transfer Stripe says is not reversed: the
    refetched object wins."""
    run = executed(stripe_month, finance, django_capture_on_commit_callbacks)
    payout = line(run, "REDEEMER")

    body = event_body(
        "transfer.reversed",
        {"id": payout.stripe_object_id, "object": "transfer", "reversed": True},
    )
    with django_capture_on_commit_callbacks(execute=True):
        post(client, body)

    payout.refresh_from_db()
    assert payout.status == SettlementLine.Status.PAID


def test_events_out_of_order_end_in_the_state_stripe_holds(
    client, stripe_bed, stripe_month, finance, django_capture_on_commit_callbacks
):
    run = executed(stripe_month, finance, django_capture_on_commit_callbacks)
    payout = line(run, "REDEEMER")
    collection = line(run, "ISSUER")
    stripe_bed.client.v1.transfers.reversals.create(payout.stripe_object_id)
    transfer = {"id": payout.stripe_object_id, "object": "transfer"}
    payment = {"id": collection.stripe_object_id, "object": "payment_intent"}

    # The reversal arrives first, the creation last; a stale "payment failed" after success.
    for event_type, obj in [
        ("transfer.reversed", transfer),
        ("payment_intent.payment_failed", payment),
        ("payment_intent.succeeded", payment),
        ("transfer.created", transfer),
        ("payment_intent.payment_failed", payment),
    ]:
        with django_capture_on_commit_callbacks(execute=True):
            assert post(client, event_body(event_type, obj)).status_code == 200

    payout.refresh_from_db()
    collection.refresh_from_db()
    assert payout.status == SettlementLine.Status.FAILED
    assert collection.status == SettlementLine.Status.PAID
    assert StripeEvent.objects.filter(processed_at__isnull=True).count() == 0


def test_the_same_event_twice_is_applied_once(
    client, stripe_bed, stripe_month, finance, django_capture_on_commit_callbacks
):
    run = executed(stripe_month, finance, django_capture_on_commit_callbacks)
    payout = line(run, "REDEEMER")
    stripe_bed.client.v1.transfers.reversals.create(payout.stripe_object_id)
    body = event_body("transfer.reversed", {"id": payout.stripe_object_id, "object": "transfer"})

    with django_capture_on_commit_callbacks(execute=True):
        first = post(client, body)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        second = post(client, body)

    assert first.json() == {"received": True, "duplicate": False}
    assert second.json() == {"received": True, "duplicate": True}
    assert callbacks == []
    assert StripeEvent.objects.count() == 1
    assert payout.transitions.filter(to_status="failed").count() == 1


def test_a_payout_on_a_connected_account_is_recorded_for_the_partner(
    client, stripe_bed, stripe_month, django_capture_on_commit_callbacks
):
    redeemer = stripe_month["redeemer"]
    connected = stripe_bed.emulator.client(stripe_account=redeemer.stripe_account_id)
    payout = connected.v1.payouts.create({"amount": 4000, "currency": "eur", "status": "paid"})

    body = event_body(
        "payout.paid", {"id": payout.id, "object": "payout"}, account=redeemer.stripe_account_id
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert post(client, body).status_code == 200

    recorded = ConnectedPayout.objects.get(payout_id=payout.id)
    assert (recorded.partner, recorded.status, recorded.amount) == (redeemer, "paid", 40)
    assert recorded.currency == "EUR"
    assert recorded.stripe_account == redeemer.stripe_account_id


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_five_concurrent_replays_record_and_apply_the_event_once(
    stripe_bed, stripe_month, finance, django_capture_on_commit_callbacks
):
    run = stripe_month["run"]
    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute(run=run, started_by=finance)
    payout = line(run, "REDEEMER")
    payout.refresh_from_db()
    stripe_bed.client.v1.transfers.reversals.create(payout.stripe_object_id)
    body = event_body("transfer.reversed", {"id": payout.stripe_object_id, "object": "transfer"})

    outcomes = factories.run_concurrently(5, lambda _i: post(Client(), body).status_code)

    assert outcomes == [("ok", 200)] * 5
    assert StripeEvent.objects.count() == 1
    event = StripeEvent.objects.get()
    assert event.processed_at is not None
    payout.refresh_from_db()
    assert payout.status == SettlementLine.Status.FAILED
    assert payout.transitions.filter(to_status="failed").count() == 1
