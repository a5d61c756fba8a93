"""Retrying and carrying forward a failed line never moves its money twice, against the
emulator: an earlier attempt that can still succeed (a collection waiting for 3-D Secure) is
cancelled at Stripe first, one that succeeded or was transferred makes the line paid, one
still processing refuses; a success Stripe reports for a carried or superseded payment is
applied or recorded for finance, never ignored; carrying a line forward moves its amount
into the run's carried-forward balance so that consecutive runs tie; an event whose object
Stripe will never give is recorded as failed, not retried forever."""

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from coalition.errors import CoalitionError, ErrorCode
from coalition.models import AuditEvent
from settlement import selectors, services
from settlement import stripe_gateway as gateway
from settlement.models import (
    Reconciliation,
    SettlementLine,
    SettlementRun,
    SettlementTransition,
    StripeEvent,
)
from settlement.services import runs as runs_service
from settlement.services.webhooks import NEEDS_FINANCE

from .conftest import collection_of, days
from .test_webhooks import event_body, post, webhook_secret  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db

Status = SettlementLine.Status
D = Decimal
THREE_D_SECURE_CARD = "4000002500003155"  # succeeds once the cardholder authenticates


# --------------------------------------------------------------------------- helpers


def three_d_secure_card(stripe_bed, customer_id: str) -> str:
    """Make the customer's default card one that needs 3-D Secure (off-session too)."""
    method = stripe_bed.client.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": THREE_D_SECURE_CARD, "exp_month": 12, "exp_year": 2034,
                     "cvc": "123"},
        }
    )  # fmt: skip
    return stripe_bed.set_card(customer_id, method.id)


def authenticate(stripe_bed, payment_id: str) -> int:
    """The partner completes 3-D Secure for an intent (the emulator's hook for it).
    Returns the HTTP status: 200, or 400 when the intent no longer waits for it."""
    intent = stripe_bed.client.v1.payment_intents.retrieve(payment_id)
    try:
        stripe_bed.client.raw_request(
            "post",
            f"/v1/payment_intents/{payment_id}/_authenticate",
            client_secret=intent.client_secret,
            success="true",
        )
    except Exception as refused:  # noqa: BLE001 - the status is what the test reads
        return getattr(refused, "http_status", None) or 500
    return 200


def intent_status(stripe_bed, payment_id: str) -> str:
    return stripe_bed.client.v1.payment_intents.retrieve(payment_id).status


def payout_of(run) -> SettlementLine:
    return run.lines.select_related("partner").get(partner__code="REDEEMER")


def execute(run, finance, django_capture_on_commit_callbacks) -> SettlementRun:
    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute(run=run, started_by=finance)
    run.refresh_from_db()
    return run


@pytest.fixture
def waiting_for_3ds(stripe_bed, stripe_month, finance, django_capture_on_commit_callbacks):
    """The run executed; its 200.00 collection failed because the partner's card needs
    3-D Secure (`requires_action`): Stripe can still collect it once the partner acts."""
    issuer = stripe_month["issuer"]
    three_d_secure_card(stripe_bed, issuer.stripe_customer_id)
    run = execute(stripe_month["run"], finance, django_capture_on_commit_callbacks)
    collection = collection_of(run)
    assert (collection.status, collection.failure_code) == (Status.FAILED, "requires_action")
    assert intent_status(stripe_bed, collection.stripe_object_id) == "requires_action"
    assert run.status == SettlementRun.Status.PARTIALLY_FAILED
    return {**stripe_month, "run": run, "collection": collection}


def succeeded_payments(stripe_bed, run) -> list[str]:
    return [p.id for p in stripe_bed.payments(run) if p.status == "succeeded"]


def snapshot(line: SettlementLine) -> tuple:
    line.refresh_from_db()
    return (line.status, line.direction, line.attempt, line.stripe_object_id, line.net_amount)


# --------------------------------------------------------------------------- retry


def test_a_retry_cancels_the_payment_waiting_for_3ds_so_it_can_never_collect_too(
    stripe_bed, waiting_for_3ds, approver, django_capture_on_commit_callbacks
):
    # Given a collection that failed waiting for 3-D Secure
    run, collection = waiting_for_3ds["run"], waiting_for_3ds["collection"]
    first = collection.stripe_object_id
    # When the partner saves a card that needs no authentication and staff retry
    stripe_bed.set_card(waiting_for_3ds["issuer"].stripe_customer_id, "pm_card_visa")
    with django_capture_on_commit_callbacks(execute=True):
        services.line_retry(line=collection, user=approver)

    # Then the first intent was cancelled at Stripe before the second attempt collected
    collection.refresh_from_db()
    assert (collection.status, collection.attempt) == (Status.PAID, 2)
    assert collection.stripe_object_id != first
    assert intent_status(stripe_bed, first) == "canceled"
    # and the partner completing 3-D Secure late cannot collect the money a second time
    assert authenticate(stripe_bed, first) == 400
    assert succeeded_payments(stripe_bed, run) == [collection.stripe_object_id]


def test_a_retry_after_3ds_succeeded_late_marks_the_line_paid_and_collects_nothing_more(
    stripe_bed, waiting_for_3ds, approver, django_capture_on_commit_callbacks
):
    # Given the partner completed 3-D Secure after the line failed (its webhook not in yet)
    run, collection = waiting_for_3ds["run"], waiting_for_3ds["collection"]
    first = collection.stripe_object_id
    assert authenticate(stripe_bed, first) == 200

    # When staff retry the line
    with django_capture_on_commit_callbacks(execute=True):
        returned = services.line_retry(line=collection, user=approver)

    # Then the line is paid by that payment, with no new attempt and no second payment
    assert returned.status == Status.PAID
    collection.refresh_from_db()
    assert (collection.status, collection.attempt, collection.stripe_object_id) == (
        Status.PAID,
        1,
        first,
    )
    assert succeeded_payments(stripe_bed, run) == [first]
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.COMPLETED
    transition = collection.transitions.last()
    assert (transition.from_status, transition.to_status) == (Status.FAILED, Status.PAID)
    assert first in transition.note and transition.actor == approver


def test_the_dashboard_says_a_retried_line_was_paid_by_its_earlier_attempt(
    client, stripe_bed, waiting_for_3ds, approver, django_capture_on_commit_callbacks
):
    # Given the partner completed 3-D Secure after the line failed
    collection = waiting_for_3ds["collection"]
    assert authenticate(stripe_bed, collection.stripe_object_id) == 200

    # When finance retries the line from the dashboard
    client.force_login(approver)
    with django_capture_on_commit_callbacks(execute=True):
        page = client.post(f"/finance/lines/{collection.pk}/retry/", follow=True)

    # Then the page says what happened: paid by the earlier attempt, not queued again
    text = page.content.decode()
    assert "paid at Stripe by an earlier attempt" in text and "queued again" not in text


def test_a_payment_still_processing_refuses_retry_and_carry_forward_and_changes_nothing(
    stripe_bed, waiting_for_3ds, approver, monkeypatch
):
    """A debit Stripe is still moving may yet succeed. The emulator settles debits at
    once, so Stripe's answer about this intent is made 'processing' on the way back."""
    collection = waiting_for_3ds["collection"]
    pending = collection.stripe_object_id
    for name in ("payment_intent_retrieve", "payment_intents_of_customer"):
        real = getattr(gateway, name)

        def as_processing(*args, _real=real, **kwargs):
            found = _real(*args, **kwargs)
            mark = lambda p: replace(p, status="processing") if p.id == pending else p  # noqa: E731
            return [mark(p) for p in found] if isinstance(found, list) else mark(found)

        monkeypatch.setattr(gateway, name, as_processing)
    before = snapshot(collection)
    transitions, audits = SettlementTransition.objects.count(), AuditEvent.objects.count()

    for action in (
        lambda: services.line_retry(line=collection, user=approver),
        lambda: services.line_carry_forward(line=collection, user=approver),
    ):
        with pytest.raises(CoalitionError) as refused:
            action()
        assert refused.value.code == ErrorCode.INVALID_STATE
        assert pending in refused.value.message and "processing" in refused.value.message

    # Nothing changed, here or at Stripe
    assert snapshot(collection) == before
    assert SettlementTransition.objects.count() == transitions
    assert AuditEvent.objects.count() == audits
    assert intent_status(stripe_bed, pending) == "requires_action"


def test_a_retry_whose_cancel_answer_is_lost_changes_nothing_and_can_be_run_again(
    stripe_bed, waiting_for_3ds, approver, django_capture_on_commit_callbacks
):
    # Given Stripe cancels the waiting intent but the answer never arrives
    collection = waiting_for_3ds["collection"]
    first = collection.stripe_object_id
    stripe_bed.emulator.inject_fault(f"/v1/payment_intents/{first}/cancel", "lost_response")
    before = snapshot(collection)
    transitions = SettlementTransition.objects.count()

    # When staff retry: refused, nothing written
    with pytest.raises(CoalitionError) as refused:
        services.line_retry(line=collection, user=approver)
    assert refused.value.code == ErrorCode.INVALID_STATE
    assert snapshot(collection) == before
    assert SettlementTransition.objects.count() == transitions
    assert intent_status(stripe_bed, first) == "canceled"  # Stripe did act

    # and retrying again goes ahead (the intent is cancelled: nothing can collect it)
    stripe_bed.set_card(waiting_for_3ds["issuer"].stripe_customer_id, "pm_card_visa")
    with django_capture_on_commit_callbacks(execute=True):
        services.line_retry(line=collection, user=approver)
    collection.refresh_from_db()
    assert (collection.status, collection.attempt) == (Status.PAID, 2)
    assert len(succeeded_payments(stripe_bed, waiting_for_3ds["run"])) == 1


def planted_failed_payout(stripe_bed, stripe_month, finance, django_capture_on_commit_callbacks):
    """The pay-out's transfer exists at Stripe, but the line failed without recording it
    (its answer was lost, and the next pass failed for good: an idempotency-key mismatch
    after the partner changed account, say). Planted after a normal execution."""
    run = execute(stripe_month["run"], finance, django_capture_on_commit_callbacks)
    payout = payout_of(run)
    transfer = payout.stripe_object_id
    assert transfer.startswith("tr_")
    SettlementLine.objects.filter(pk=payout.pk).update(
        status=Status.FAILED, stripe_object_id="", stripe_status="", failure_code="idempotency"
    )
    SettlementRun.objects.filter(pk=run.pk).update(status=SettlementRun.Status.PARTIALLY_FAILED)
    run.refresh_from_db()
    payout.refresh_from_db()
    return run, payout, transfer


@pytest.mark.parametrize("action", ["retry", "carry_forward"])
def test_a_failed_payout_whose_transfer_exists_is_adopted_not_paid_again(
    action, stripe_bed, stripe_month, finance, approver, django_capture_on_commit_callbacks
):
    run, payout, transfer = planted_failed_payout(
        stripe_bed, stripe_month, finance, django_capture_on_commit_callbacks
    )
    paid_out = run.total_paid_out

    with django_capture_on_commit_callbacks(execute=True):
        if action == "retry":
            services.line_retry(line=payout, user=approver)
        else:
            services.line_carry_forward(line=payout, user=approver)

    payout.refresh_from_db()
    assert (payout.status, payout.attempt, payout.stripe_object_id) == (Status.PAID, 1, transfer)
    assert payout.direction == "pay_out"
    mine = [
        t.id
        for t in stripe_bed.transfers(run.transfer_group)
        if t.metadata.to_dict().get("settlement_line_reference") == str(payout.reference)
    ]
    assert mine == [transfer]  # never a second transfer
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.COMPLETED
    assert run.total_paid_out == paid_out and run.carried_forward == 0


# --------------------------------------------------------------------------- carry forward


def test_carrying_forward_cancels_the_payment_waiting_for_3ds(
    stripe_bed, waiting_for_3ds, approver
):
    run, collection = waiting_for_3ds["run"], waiting_for_3ds["collection"]
    first = collection.stripe_object_id

    services.line_carry_forward(line=collection, user=approver, reason="card needs 3DS")

    collection.refresh_from_db()
    assert collection.status == Status.CARRIED_FORWARD
    assert intent_status(stripe_bed, first) == "canceled"
    assert authenticate(stripe_bed, first) == 400  # it can never collect now
    assert succeeded_payments(stripe_bed, run) == []
    note = collection.transitions.last().note
    assert note.startswith("card needs 3DS") and first in note


def test_carrying_forward_after_3ds_succeeded_late_marks_the_line_paid_instead(
    stripe_bed, waiting_for_3ds, approver
):
    run, collection = waiting_for_3ds["run"], waiting_for_3ds["collection"]
    first = collection.stripe_object_id
    assert authenticate(stripe_bed, first) == 200
    collected = run.total_collected

    services.line_carry_forward(line=collection, user=approver)

    collection.refresh_from_db()
    assert (collection.status, collection.direction, collection.stripe_object_id) == (
        Status.PAID,
        "collect",
        first,
    )
    assert collection.carried_to_run is None
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.COMPLETED
    assert (run.total_collected, run.carried_forward) == (collected, 0)


def test_a_carried_line_leaves_the_run_totals_and_the_next_run_takes_exactly_that(
    stripe_bed, stripe_month, finance, approver, django_capture_on_commit_callbacks
):
    # Given the collection declined and the pay-out's account missing
    run = stripe_month["run"]
    stripe_bed.set_card(stripe_month["issuer"].stripe_customer_id, "pm_card_chargeCustomerFail")
    redeemer = stripe_month["redeemer"]
    redeemer.stripe_account_id = "acct_doesnotexist"
    redeemer.save()
    run = execute(run, finance, django_capture_on_commit_callbacks)
    assert (run.total_collected, run.total_paid_out) == (D("200.00"), D("60.00"))
    float_end = run.float_end

    # When staff carry both forward
    services.line_carry_forward(line=collection_of(run), user=approver)
    services.line_carry_forward(line=payout_of(run), user=approver)

    # Then the run no longer counts them as moved: they are its carried-forward balance
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.COMPLETED
    assert (run.total_collected, run.total_paid_out) == (D("0"), D("20.00"))
    assert run.carried_forward == D("-200.00") + D("40.00")
    assert run.float_end == float_end - D("160.00")
    assert selectors.run_totals_tie(run=run)

    # and the next run takes in exactly what this one carried, the float continuing
    second = services.run_create(period_end=run.period_end + days(30), created_by=finance)
    assert second.carried_in == run.carried_forward
    assert second.points_float_start == run.points_float_end
    assert second.float_start == run.float_end
    assert selectors.run_totals_tie(run=second)
    assert {line.partner.code: line.net_amount for line in second.lines.all()} == {
        "ISSUER": D("-200.00"),
        "REDEEMER": D("40.00"),
    }


# --------------------------------------------------------------------------- webhooks


def bypass_the_stripe_check(monkeypatch):
    """An earlier attempt left live (a line retried or carried before this check existed,
    or an intent the check could not see): what the webhooks must cope with."""
    monkeypatch.setattr(
        runs_service, "_settle_at_stripe", lambda line, action: runs_service._StripeVerdict()
    )


def deliver(client, django_capture_on_commit_callbacks, payment_id: str):
    body = event_body("payment_intent.succeeded", {"id": payment_id, "object": "payment_intent"})
    with django_capture_on_commit_callbacks(execute=True):
        assert post(client, body).status_code == 200
    return StripeEvent.objects.filter(object_id=payment_id).order_by("-id").first()


@pytest.fixture
def retry_leaving_the_first_live(
    stripe_bed, waiting_for_3ds, approver, monkeypatch, django_capture_on_commit_callbacks
):
    """Retry the waiting collection with the partner's card now ``card``, its first intent
    left live at Stripe (the check that cancels it bypassed). Returns the first intent's id;
    the fixture's collection is refreshed."""

    def retry(card: str) -> str:
        collection = waiting_for_3ds["collection"]
        first = collection.stripe_object_id
        bypass_the_stripe_check(monkeypatch)
        stripe_bed.set_card(waiting_for_3ds["issuer"].stripe_customer_id, card)
        with django_capture_on_commit_callbacks(execute=True):
            services.line_retry(line=collection, user=approver)
        collection.refresh_from_db()
        return first

    return retry


def test_a_carried_line_collected_late_is_paid_and_leaves_the_carried_balance(
    client, stripe_bed, waiting_for_3ds, approver, monkeypatch, django_capture_on_commit_callbacks
):
    # Given the waiting collection carried forward while its intent stayed live
    run, collection = waiting_for_3ds["run"], waiting_for_3ds["collection"]
    collected = run.total_collected
    bypass_the_stripe_check(monkeypatch)
    services.line_carry_forward(line=collection, user=approver)
    run.refresh_from_db()
    assert (run.total_collected, run.carried_forward) == (0, D("-200.00"))

    # When the partner completes 3-D Secure and Stripe says so, before any run took it in
    assert authenticate(stripe_bed, collection.stripe_object_id) == 200
    event = deliver(client, django_capture_on_commit_callbacks, collection.stripe_object_id)

    # Then the line is paid after all and the run's figures say so
    assert event.processed_at is not None
    collection.refresh_from_db()
    assert (collection.status, collection.direction) == (Status.PAID, "collect")
    run.refresh_from_db()
    assert (run.total_collected, run.carried_forward) == (collected, 0)
    assert selectors.run_totals_tie(run=run)
    assert run.status == SettlementRun.Status.COMPLETED


def test_a_carried_line_collected_after_the_next_run_took_it_is_recorded_for_finance(
    client, stripe_bed, waiting_for_3ds, finance, approver, monkeypatch,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    # Given the waiting collection carried forward and taken into the next run
    run, collection = waiting_for_3ds["run"], waiting_for_3ds["collection"]
    bypass_the_stripe_check(monkeypatch)
    services.line_carry_forward(line=collection, user=approver)
    second = services.run_create(period_end=run.period_end + days(30), created_by=finance)
    collection.refresh_from_db()
    assert collection.carried_to_run == second

    # When the partner completes 3-D Secure: the money is in, and run 2 asks for it again
    assert authenticate(stripe_bed, collection.stripe_object_id) == 200
    event = deliver(client, django_capture_on_commit_callbacks, collection.stripe_object_id)

    # Then the event is not silently ignored: the line's history says what finance must do
    assert event.processed_at is not None and event.outcome.startswith("needs finance")
    collection.refresh_from_db()
    assert collection.status == Status.CARRIED_FORWARD  # run 2's figures stand
    flagged = collection.transitions.get(note__startswith=NEEDS_FINANCE)
    assert flagged.actor_label == f"stripe:{event.event_id}"
    assert f"run #{second.pk}" in flagged.note and collection.stripe_object_id in flagged.note
    # And reconciling the first run shows the money no line of it accounts for
    report = services.run_reconcile(run=run)
    assert not report.clean
    assert [d["stripe_id"] for d in report.differences if d["kind"] == "duplicate"] == [
        collection.stripe_object_id
    ]


def test_an_earlier_attempt_collected_after_a_retry_collected_too_is_flagged_as_a_duplicate(
    client, stripe_bed, waiting_for_3ds, retry_leaving_the_first_live,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    # Given a retry that collected while the first intent stayed live
    run, collection = waiting_for_3ds["run"], waiting_for_3ds["collection"]
    first = retry_leaving_the_first_live("pm_card_visa")
    assert (collection.status, collection.attempt) == (Status.PAID, 2)

    # When the partner completes 3-D Secure on the first one too
    assert authenticate(stripe_bed, first) == 200
    event = deliver(client, django_capture_on_commit_callbacks, first)

    # Then finance sees it: in the line's history and in the run's reconciliation
    assert event.outcome.startswith("needs finance")
    flagged = collection.transitions.get(note__startswith=NEEDS_FINANCE)
    assert first in flagged.note and "twice" in flagged.note
    latest = Reconciliation.objects.filter(run=run).order_by("-id").first()
    assert latest is not None and not latest.clean
    assert ("duplicate", first) in [(d["kind"], d["stripe_id"]) for d in latest.differences]
    # once, however many events Stripe sends about it
    deliver(client, django_capture_on_commit_callbacks, first)
    assert collection.transitions.filter(note__startswith=NEEDS_FINANCE).count() == 1


def test_an_earlier_attempt_collected_while_the_retry_failed_pays_the_line(
    client, stripe_bed, waiting_for_3ds, retry_leaving_the_first_live,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    # Given a retry that was declined while the first intent stayed live
    run, collection = waiting_for_3ds["run"], waiting_for_3ds["collection"]
    first = retry_leaving_the_first_live("pm_card_chargeCustomerFail")
    assert (collection.status, collection.attempt) == (Status.FAILED, 2)

    # When the first one succeeds after all
    assert authenticate(stripe_bed, first) == 200
    deliver(client, django_capture_on_commit_callbacks, first)

    # Then the line is paid by it (so nobody retries or carries it forward again)
    collection.refresh_from_db()
    assert (collection.status, collection.stripe_object_id) == (Status.PAID, first)
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.COMPLETED


def test_an_event_for_an_object_stripe_does_not_have_is_recorded_failed_not_retried_forever(
    client, stripe_bed, django_capture_on_commit_callbacks
):
    # Given an event about an intent Stripe does not know, and one about Stripe being down
    gone = event_body("payment_intent.succeeded", {"id": "pi_gone", "object": "payment_intent"})
    down = event_body("transfer.created", {"id": "tr_later", "object": "transfer"})
    stripe_bed.emulator.inject_fault(
        "/v1/transfers/tr_later", "error_500", method="GET", count=100
    )  # every retry of the task too

    with django_capture_on_commit_callbacks(execute=True):
        assert post(client, gone).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        assert post(client, down).status_code == 200

    # Then the first is processed, its outcome saying why; the second waits to be retried
    failed = StripeEvent.objects.get(object_id="pi_gone")
    assert failed.processed_at is not None
    assert failed.outcome.startswith("failed for good") and "pi_gone" in failed.outcome
    waiting = StripeEvent.objects.get(object_id="tr_later")
    assert waiting.processed_at is None
    # and the periodic job re-queues only the one that can still succeed
    StripeEvent.objects.update(received_at=timezone.now() - timedelta(minutes=5))
    assert list(
        StripeEvent.objects.filter(processed_at__isnull=True).values_list("object_id", flat=True)
    ) == ["tr_later"]
