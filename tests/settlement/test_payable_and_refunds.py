"""Money that must not move, and money that moved back.

A charity no longer payable when its line comes to be paid (suspended after the run was
computed) is not paid: its line fails with `payee_not_payable`, nothing reaches Stripe, and
finance retries it or carries it forward. A collection refunded or disputed after it
succeeded is reported by reconciliation: Stripe keeps less than the line says.

Against the emulator over HTTP; refunds are Stripe's `/v1/refunds`, disputes are opened and
decided through the emulator's control routes (Stripe's API cannot open one)."""

from decimal import Decimal

import pytest
import stripe

from charity.models import Charity
from charity.services import charity_set_status
from settlement import services
from settlement.models import SettlementLine, SettlementRun
from settlement.services import reconciliation
from tests.settlement.conftest import collection_of, days, kinds
from tests.settlement.test_execution import Killed, kill_after, start

pytestmark = pytest.mark.django_db

Status = SettlementLine.Status
RunStatus = SettlementRun.Status


def charity_line(run) -> SettlementLine:
    return SettlementLine.objects.select_related("charity").get(run=run, charity__isnull=False)


def suspend(charity, reason="under investigation"):
    charity_set_status(charity=charity, status=Charity.Status.SUSPENDED, reason=reason)


def charity_transfers(stripe_bed, run, charity) -> list:
    return [
        t
        for t in stripe_bed.transfers(run.transfer_group)
        if t.destination == charity.stripe_account_id
    ]


# --------------------------------------------------------------------------- payable


def test_a_charity_suspended_after_the_run_was_computed_is_not_paid(
    stripe_bed, stripe_month, finance, django_capture_on_commit_callbacks
):
    # Given an approved run paying a verified charity 20.00, and the charity then suspended
    run, charity = stripe_month["run"], stripe_month["charity"]
    assert (charity_line(run).direction, charity_line(run).status) == ("pay_out", "pending")
    suspend(charity)

    # When the run is executed
    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute(run=run, started_by=finance)

    # Then the charity's line is failed with a reason finance reads, and nothing was sent
    line = charity_line(run)
    assert (line.status, line.failure_code) == (Status.FAILED, "payee_not_payable")
    assert "suspended" in line.failure_reason and "nothing was sent" in line.failure_reason
    assert line.stripe_object_id == "" and line.paid_at is None
    assert charity_transfers(stripe_bed, run, charity) == []
    transition = line.transitions.order_by("-id").first()
    assert (transition.from_status, transition.to_status) == (Status.PENDING, Status.FAILED)
    assert "payee_not_payable" in transition.note
    # the run's other lines went ahead; the run waits for finance
    assert run.lines.get(partner__code="REDEEMER").status == Status.PAID
    assert run.lines.get(partner__code="ISSUER").status == Status.PAID
    run.refresh_from_db()
    assert run.status == RunStatus.PARTIALLY_FAILED
    # and Stripe agrees with the books
    assert run.reconciliations.get().clean


def test_a_charity_never_verified_is_not_paid_either(
    stripe_bed, stripe_month, finance, django_capture_on_commit_callbacks
):
    run, charity = stripe_month["run"], stripe_month["charity"]
    Charity.objects.filter(pk=charity.pk).update(status=Charity.Status.PENDING)

    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute(run=run, started_by=finance)

    line = charity_line(run)
    assert (line.status, line.failure_code) == (Status.FAILED, "payee_not_payable")
    assert "pending verification" in line.failure_reason
    assert charity_transfers(stripe_bed, run, charity) == []


def test_the_held_line_is_retried_once_the_charity_is_verified_again(
    stripe_bed, stripe_month, finance, approver, django_capture_on_commit_callbacks
):
    run, charity = stripe_month["run"], stripe_month["charity"]
    suspend(charity)
    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute(run=run, started_by=finance)
    line = charity_line(run)

    # A retry while it is still suspended fails the same way, and sends nothing
    with django_capture_on_commit_callbacks(execute=True):
        services.line_retry(line=line, user=approver)
    line.refresh_from_db()
    assert (line.status, line.failure_code, line.attempt) == (
        Status.FAILED,
        "payee_not_payable",
        2,
    )
    assert charity_transfers(stripe_bed, run, charity) == []

    # Verified again: the retry pays it, once
    charity_set_status(charity=charity, status=Charity.Status.VERIFIED, reason="cleared")
    with django_capture_on_commit_callbacks(execute=True):
        services.line_retry(line=line, user=approver)

    line.refresh_from_db()
    assert line.status == Status.PAID
    [transfer] = charity_transfers(stripe_bed, run, charity)
    assert (transfer.id, transfer.amount) == (line.stripe_object_id, 2000)
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED


def test_the_held_line_carried_forward_stays_held_while_the_charity_is_suspended(
    stripe_bed, stripe_month, finance, approver, base_time, django_capture_on_commit_callbacks
):
    run, charity = stripe_month["run"], stripe_month["charity"]
    suspend(charity)
    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute(run=run, started_by=finance)

    # Finance carries it forward: the run completes
    services.line_carry_forward(line=charity_line(run), user=approver)
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED

    # The next run takes the 20.00 in and holds it, the charity still suspended
    second = services.run_create(period_end=base_time + days(1), created_by=finance)
    held = charity_line(second)
    assert held.carried_in_amount == Decimal("20.00")
    assert (held.direction, held.status) == ("carry_forward", "carried_forward")
    assert "suspended" in held.hold_reason


def test_a_transfer_made_before_a_crash_is_adopted_even_if_the_charity_was_suspended_since(
    stripe_bed, stripe_month, finance, monkeypatch, django_capture_on_commit_callbacks
):
    """The money left before the suspension: the line records it as paid, never as held."""
    run, charity = stripe_month["run"], stripe_month["charity"]
    start(run, finance, django_capture_on_commit_callbacks)
    # Stripe calls: payment method, payment intent, transfer listing, the redeemer's
    # transfer, the charity's transfer (made at Stripe, then the executor dies).
    kill_after(monkeypatch, 5)
    with pytest.raises(Killed):
        services.run_execute_lines(run_id=run.pk)
    assert charity_line(run).status == Status.PENDING
    suspend(charity)

    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute_lines(run_id=run.pk)

    line = charity_line(run)
    [transfer] = charity_transfers(stripe_bed, run, charity)
    assert (line.status, line.stripe_object_id) == (Status.PAID, transfer.id)


def test_a_suspended_charity_waits_while_stripe_cannot_list_the_runs_transfers(
    stripe_bed, stripe_month, finance, django_capture_on_commit_callbacks
):
    """Without the listing, a transfer made by a pass that crashed could not be seen: the
    line stays pending (transient) rather than being held and later paid twice."""
    from settlement import stripe_gateway as gateway

    run, charity = stripe_month["run"], stripe_month["charity"]
    start(run, finance, django_capture_on_commit_callbacks)
    suspend(charity)
    stripe_bed.emulator.inject_fault("/v1/transfers", "error_500", method="GET")

    with pytest.raises(gateway.TransientError):
        services.run_execute_lines(run_id=run.pk)
    assert charity_line(run).status == Status.PENDING

    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute_lines(run_id=run.pk)  # Stripe answers again
    line = charity_line(run)
    assert (line.status, line.failure_code) == (Status.FAILED, "payee_not_payable")
    assert charity_transfers(stripe_bed, run, charity) == []


# --------------------------------------------------------------------------- refunds


def test_a_partly_refunded_collection_is_reported(stripe_bed, executed_run):
    # Given the issuer's 200.00 collected, then 50.00 of it refunded at Stripe
    collection = collection_of(executed_run)
    stripe_bed.client.v1.refunds.create(
        {"payment_intent": collection.stripe_object_id, "amount": 5000}
    )

    # When the run is reconciled
    result = services.run_reconcile(run=executed_run)

    # Then the difference says what Stripe keeps, and why
    assert not result.clean
    assert kinds(result) == [("amount_mismatch", collection.stripe_object_id)]
    [difference] = result.differences
    assert (difference["line"], difference["expected"], difference["actual"]) == (
        collection.pk,
        "20000 USD",
        "15000 USD",
    )
    assert "5000 USD refunded" in difference["message"]


def test_a_fully_refunded_collection_is_reported(stripe_bed, executed_run):
    collection = collection_of(executed_run)
    stripe_bed.client.v1.refunds.create({"payment_intent": collection.stripe_object_id})

    result = services.run_reconcile(run=executed_run)

    [difference] = result.differences
    assert (difference["kind"], difference["actual"]) == ("amount_mismatch", "0 USD")
    assert "20000 USD refunded in full" in difference["message"]


def test_a_disputed_collection_is_reported_until_the_dispute_is_won(stripe_bed, executed_run):
    collection = collection_of(executed_run)
    dispute = stripe_bed.emulator.control.open_dispute(
        payment_intent=collection.stripe_object_id, amount=20000
    )

    open_ = services.run_reconcile(run=executed_run)

    [difference] = open_.differences
    assert (difference["kind"], difference["expected"], difference["actual"]) == (
        "amount_mismatch",
        "20000 USD",
        "0 USD",
    )
    assert f"20000 USD disputed ({dispute['id']}, needs_response)" in difference["message"]

    # Won: the funds come back, and the books agree again
    stripe_bed.emulator.control.move_dispute(dispute["id"], "won")
    assert services.run_reconcile(run=executed_run).clean


def test_a_lost_dispute_after_a_partial_refund_is_reported_with_both(stripe_bed, executed_run):
    collection = collection_of(executed_run)
    stripe_bed.client.v1.refunds.create(
        {"payment_intent": collection.stripe_object_id, "amount": 2000}
    )
    dispute = stripe_bed.emulator.control.open_dispute(
        payment_intent=collection.stripe_object_id, amount=3000
    )
    stripe_bed.client.v1.disputes.close(dispute["id"])  # accepted: lost

    [difference] = services.run_reconcile(run=executed_run).differences

    assert difference["actual"] == "15000 USD"
    assert "2000 USD refunded" in difference["message"]
    assert f"3000 USD disputed ({dispute['id']}, lost)" in difference["message"]


def test_an_inquiry_withdraws_nothing_and_is_not_a_difference(stripe_bed, executed_run):
    collection = collection_of(executed_run)
    stripe_bed.emulator.control.open_dispute(
        payment_intent=collection.stripe_object_id, status="warning_needs_response"
    )

    assert services.run_reconcile(run=executed_run).clean


def test_a_refunded_double_charge_no_longer_counts_but_a_partly_refunded_one_does(
    stripe_bed, executed_run
):
    double = stripe_bed.collect_again(executed_run, collection_of(executed_run), 20000)
    stripe_bed.client.v1.refunds.create({"payment_intent": double.id, "amount": 15000})

    [difference] = services.run_reconcile(run=executed_run).differences
    assert (difference["kind"], difference["stripe_id"]) == ("duplicate", double.id)
    assert (
        difference["actual"].startswith("5000 USD")
        and "15000 USD refunded" in (difference["message"])
    )

    stripe_bed.client.v1.refunds.create({"payment_intent": double.id})  # the rest
    assert services.run_reconcile(run=executed_run).clean


def test_a_failed_line_whose_payment_was_given_back_agrees_with_stripe(stripe_bed, executed_run):
    collection = collection_of(executed_run)
    SettlementLine.objects.filter(pk=collection.pk).update(status=Status.FAILED)
    stripe_bed.client.v1.refunds.create(
        {"payment_intent": collection.stripe_object_id, "amount": 5000}
    )
    # Part of it still held: Stripe collected for a line the books say failed
    assert kinds(services.run_reconcile(run=executed_run)) == [
        ("amount_mismatch", collection.stripe_object_id),
        ("status_mismatch", collection.stripe_object_id),
    ]

    stripe_bed.client.v1.refunds.create({"payment_intent": collection.stripe_object_id})
    assert services.run_reconcile(run=executed_run).clean


def test_reconciliation_reads_charges_through_the_gateways_client(
    stripe_bed, executed_run, settings
):
    """The helper uses the gateway's configuration: another API base fails as the gateway
    does (a transient error the reconcile task retries), not with a raw Stripe error."""
    from settlement import stripe_gateway as gateway

    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens there
    with pytest.raises(gateway.TransientError):
        reconciliation._payment_kept(collection_of(executed_run).stripe_object_id)


# --------------------------------------------------------------------------- emulator


@pytest.fixture
def payment(stripe_bed):
    return stripe_bed.charge(stripe_bed.customer(), 10000)


def charge_of(stripe_bed, payment):
    return stripe_bed.client.v1.payment_intents.retrieve(
        payment.id, {"expand": ["latest_charge"]}
    ).latest_charge


def test_the_emulator_refunds_no_more_than_remains(stripe_bed, payment):
    client = stripe_bed.client
    refund = client.v1.refunds.create(
        {"payment_intent": payment.id, "amount": 3000, "reason": "requested_by_customer"}
    )
    assert (refund.amount, refund.reason) == (3000, "requested_by_customer")

    with pytest.raises(stripe.InvalidRequestError, match="greater than unrefunded"):
        client.v1.refunds.create({"payment_intent": payment.id, "amount": 8000})
    rest = client.v1.refunds.create({"payment_intent": payment.id})  # what remains
    assert rest.amount == 7000
    charge = charge_of(stripe_bed, payment)
    assert (charge.amount_refunded, charge.refunded, charge.disputed) == (10000, True, False)
    with pytest.raises(stripe.InvalidRequestError, match="already been refunded"):
        client.v1.refunds.create({"payment_intent": payment.id})


def test_the_emulator_opens_lists_and_closes_disputes(stripe_bed, payment):
    control, client = stripe_bed.emulator.control, stripe_bed.client
    dispute = control.open_dispute(payment_intent=payment.id, amount=4000)

    charge = charge_of(stripe_bed, payment)
    assert charge.disputed is True
    assert (dispute["charge"], dispute["payment_intent"], dispute["amount"]) == (
        charge.id,
        payment.id,
        4000,
    )
    listed = client.v1.disputes.list({"payment_intent": payment.id}).data
    assert [d.id for d in listed] == [dispute["id"]]
    assert client.v1.disputes.list({"charge": "ch_other"}).data == []
    # a charged-back charge cannot be refunded
    with pytest.raises(stripe.InvalidRequestError, match="charged back"):
        client.v1.refunds.create({"payment_intent": payment.id, "amount": 100})
    # evidence submitted, then accepted as lost
    updated = client.v1.disputes.update(
        dispute["id"], {"evidence": {"product_description": "points"}, "submit": True}
    )
    assert updated.status == "under_review"
    assert client.v1.disputes.close(dispute["id"]).status == "lost"
    with pytest.raises(stripe.InvalidRequestError, match="already closed"):
        client.v1.disputes.close(dispute["id"])


def test_the_emulator_refuses_a_dispute_it_cannot_open(stripe_bed, payment):
    from settlement.emulator.client import EmulatorControlError

    control = stripe_bed.emulator.control
    with pytest.raises(EmulatorControlError, match="can be disputed"):
        control.open_dispute(payment_intent=payment.id, amount=10001)
    with pytest.raises(EmulatorControlError, match="open status"):
        control.open_dispute(payment_intent=payment.id, status="won")
    with pytest.raises(EmulatorControlError, match="No such payment_intent"):
        control.open_dispute(payment_intent="pi_missing")
    assert stripe_bed.client.v1.disputes.list({}).data == []
