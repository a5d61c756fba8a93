"""Execution through Stripe, against the emulator over HTTP: transfers and off-session
payments with idempotency keys from the lines, crash recovery after every Stripe call
(including a response lost after Stripe acted), permanent and transient failures."""

from decimal import Decimal

import pytest

from settlement import services
from settlement import stripe_gateway as gateway
from settlement.models import SettlementLine, SettlementRun
from settlement.tasks import execute_run

pytestmark = pytest.mark.django_db

Status = SettlementLine.Status


class Killed(BaseException):
    """The executor dies: not an Exception, so nothing in settlement catches it."""


STRIPE_CALLS = (
    "transfers_in_group",
    "transfer_create",
    "default_payment_method",
    "payment_intent_create",
)


def kill_after(monkeypatch, call_number: int) -> dict:
    """Make the `call_number`-th Stripe call succeed at Stripe, then kill the executor
    before it records anything."""
    state = {"calls": 0, "armed": True}
    for name in STRIPE_CALLS:
        real = getattr(gateway, name)

        def call(*args, _real=real, **kwargs):
            result = _real(*args, **kwargs)
            state["calls"] += 1
            if state["armed"] and state["calls"] == call_number:
                state["armed"] = False
                raise Killed(f"killed after Stripe call {call_number}")
            return result

        monkeypatch.setattr(gateway, name, call)
    return state


def start(run, user, django_capture_on_commit_callbacks):
    """Approved → executing, without running the task (the test drives execution)."""
    with django_capture_on_commit_callbacks(execute=False):
        services.run_execute(run=run, started_by=user)


def lines(run) -> dict:
    return {
        (line.partner.code if line.partner_id else "charity"): line
        for line in SettlementLine.objects.filter(run=run).select_related("partner")
    }


def assert_paid_exactly_once(stripe_bed, run):
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.COMPLETED
    by_line = lines(run)
    transfers = stripe_bed.transfers(run.transfer_group)
    assert sorted(t.metadata["settlement_line"] for t in transfers) == sorted(
        str(by_line[key].pk) for key in ("REDEEMER", "charity")
    ), "exactly one transfer per pay-out line"
    assert {t.id for t in transfers} == {
        by_line["REDEEMER"].stripe_object_id,
        by_line["charity"].stripe_object_id,
    }
    assert sorted(t.amount for t in transfers) == [2000, 4000]
    payments = stripe_bed.payments(run)
    succeeded = [p for p in payments if p.status == "succeeded"]
    assert [p.id for p in succeeded] == [by_line["ISSUER"].stripe_object_id]
    assert (
        succeeded[0].amount == 20000
        and succeeded[0].customer
        == run.lines.get(partner__code="ISSUER").partner.stripe_customer_id
    )
    assert all(line.status == Status.PAID for line in by_line.values())


def test_execution_pays_and_collects_through_stripe(
    stripe_bed, stripe_month, finance, django_capture_on_commit_callbacks
):
    run = stripe_month["run"]

    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute(run=run, started_by=finance)

    assert_paid_exactly_once(stripe_bed, run)
    transfer = stripe_bed.client.v1.transfers.retrieve(lines(run)["REDEEMER"].stripe_object_id)
    assert transfer.destination == stripe_month["redeemer"].stripe_account_id
    assert transfer.transfer_group == run.transfer_group
    assert transfer.metadata["settlement_line_reference"] == str(lines(run)["REDEEMER"].reference)
    payment = stripe_bed.client.v1.payment_intents.retrieve(lines(run)["ISSUER"].stripe_object_id)
    assert payment.payment_method  # the customer's saved card, charged off-session
    # ... and reconciliation ran after the run, and found it clean.
    assert run.reconciliations.get().clean


@pytest.mark.parametrize("call_number", [1, 2, 3, 4, 5])
def test_killed_after_any_stripe_call_then_run_again_pays_each_line_once(
    call_number, stripe_bed, stripe_month, finance, monkeypatch,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    """The five calls: the issuer's payment method, its payment intent, the transfer group
    listing, the redeemer's transfer, the charity's transfer."""
    run = stripe_month["run"]
    start(run, finance, django_capture_on_commit_callbacks)
    state = kill_after(monkeypatch, call_number)

    with pytest.raises(Killed):
        services.run_execute_lines(run_id=run.pk)
    assert state["calls"] == call_number

    # The worker restarts: the same task runs again, to the end.
    with django_capture_on_commit_callbacks(execute=True):
        execute_run.apply(args=[run.pk]).get()

    assert_paid_exactly_once(stripe_bed, run)


def test_killed_twice_in_a_row_still_pays_once(
    stripe_bed, stripe_month, finance, monkeypatch, django_capture_on_commit_callbacks
):
    run = stripe_month["run"]
    start(run, finance, django_capture_on_commit_callbacks)
    for call_number in (4, 2):  # 2nd pass: the listing, then the charity transfer
        kill_after(monkeypatch, call_number)
        with pytest.raises(Killed):
            services.run_execute_lines(run_id=run.pk)
        monkeypatch.undo()
    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute_lines(run_id=run.pk)
    assert_paid_exactly_once(stripe_bed, run)


@pytest.mark.parametrize("path", ["/v1/transfers", "/v1/payment_intents"])
def test_stripe_acted_but_the_response_was_lost(
    path, stripe_bed, stripe_month, finance, django_capture_on_commit_callbacks
):
    run = stripe_month["run"]
    start(run, finance, django_capture_on_commit_callbacks)
    stripe_bed.emulator.inject_fault(path, "lost_response", count=1)

    # The call is done at "Stripe", but the answer never arrives: a transient failure.
    with pytest.raises(gateway.TransientError):
        services.run_execute_lines(run_id=run.pk)
    still_pending = [line for line in lines(run).values() if line.status == Status.PENDING]
    assert len(still_pending) == 1

    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute_lines(run_id=run.pk)
    assert_paid_exactly_once(stripe_bed, run)


def test_the_stripe_library_retries_a_lost_response_with_the_same_key(
    stripe_bed, stripe_month, finance, settings, django_capture_on_commit_callbacks
):
    settings.STRIPE_MAX_NETWORK_RETRIES = 2  # production's setting
    run = stripe_month["run"]
    stripe_bed.emulator.inject_fault("/v1/transfers", "lost_response", count=1)

    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute(run=run, started_by=finance)

    assert_paid_exactly_once(stripe_bed, run)


def test_a_transient_failure_leaves_the_line_pending_and_is_retried(
    stripe_bed, stripe_month, finance, django_capture_on_commit_callbacks
):
    run = stripe_month["run"]
    start(run, finance, django_capture_on_commit_callbacks)
    stripe_bed.emulator.inject_fault("/v1/transfers", "error_500", count=1)

    with pytest.raises(gateway.TransientError):
        services.run_execute_lines(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.EXECUTING
    assert not any(line.status == Status.FAILED for line in lines(run).values())

    # The task's retry (with backoff on a real worker) finishes the job.
    with django_capture_on_commit_callbacks(execute=True):
        assert execute_run.apply(args=[run.pk]).get() == "completed"
    assert_paid_exactly_once(stripe_bed, run)


def test_a_declined_card_fails_the_line_with_stripes_reason_and_staff_retry_it(
    stripe_bed, stripe_month, finance, approver, django_capture_on_commit_callbacks
):
    run = stripe_month["run"]
    issuer = stripe_month["issuer"]
    stripe_bed.set_card(issuer.stripe_customer_id, "pm_card_chargeCustomerFail")

    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute(run=run, started_by=finance)

    run.refresh_from_db()
    assert run.status == SettlementRun.Status.PARTIALLY_FAILED
    collection = lines(run)["ISSUER"]
    assert collection.status == Status.FAILED
    assert collection.failure_code  # Stripe's decline code
    assert "declined" in collection.failure_reason.lower()
    assert collection.stripe_object_id.startswith("pi_")  # the failed attempt, for the record
    assert lines(run)["REDEEMER"].status == Status.PAID

    # The partner fixes its card; staff retry the line (a new attempt, a new key).
    stripe_bed.set_card(issuer.stripe_customer_id, "pm_card_visa")
    with django_capture_on_commit_callbacks(execute=True):
        services.line_retry(line=collection, user=approver)

    collection.refresh_from_db()
    assert (collection.status, collection.attempt) == (Status.PAID, 2)
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.COMPLETED
    assert len([p for p in stripe_bed.payments(run) if p.status == "succeeded"]) == 1


def test_a_missing_connected_account_fails_the_line_permanently(
    stripe_bed, stripe_month, finance, approver, django_capture_on_commit_callbacks
):
    run = stripe_month["run"]
    redeemer = stripe_month["redeemer"]
    redeemer.stripe_account_id = "acct_doesnotexist"
    redeemer.save()

    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute(run=run, started_by=finance)

    payout = lines(run)["REDEEMER"]
    assert payout.status == Status.FAILED
    assert "acct_doesnotexist" in payout.failure_reason
    assert stripe_bed.transfers(run.transfer_group) != []  # the charity's went through
    # Staff carry it forward: it joins the partner's next run; the run completes.
    services.line_carry_forward(line=payout, user=approver)
    run.refresh_from_db()
    payout.refresh_from_db()
    assert run.status == SettlementRun.Status.COMPLETED
    assert (payout.status, payout.direction, payout.net_amount) == (
        Status.CARRIED_FORWARD,
        "carry_forward",
        Decimal("40.00"),
    )


def test_a_collection_still_processing_is_asked_about_again(
    stripe_bed, stripe_month, finance, django_capture_on_commit_callbacks
):
    """A debit that settles later waits in PROCESSING, the run executing, until Stripe says
    it succeeded: by webhook, or (the webhook lost) when the executor asks again. The
    emulator settles at once, so the waiting state is planted after the payment."""
    run = stripe_month["run"]
    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute(run=run, started_by=finance)
    collection = lines(run)["ISSUER"]
    SettlementLine.objects.filter(pk=collection.pk).update(status=Status.PROCESSING)
    SettlementRun.objects.filter(pk=run.pk).update(status=SettlementRun.Status.EXECUTING)

    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute_lines(run_id=run.pk)

    collection.refresh_from_db()
    run.refresh_from_db()
    assert (collection.status, run.status) == (Status.PAID, SettlementRun.Status.COMPLETED)
    assert collection.transitions.last().from_status == Status.PROCESSING


def test_charity_learns_which_run_and_transfer_paid_a_donation(
    stripe_bed, stripe_month, finance, django_capture_on_commit_callbacks
):
    from coalition.models import LedgerTransaction
    from settlement import selectors

    run = stripe_month["run"]
    donation = LedgerTransaction.objects.get(kind="donate")
    assert selectors.transactions_claimed(transaction_ids=[donation.pk])
    assert (
        selectors.transactions_disbursements(transaction_ids=[donation.pk])[donation.pk].transfer_id
        is None
    )

    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute(run=run, started_by=finance)

    paid = selectors.transactions_disbursements(transaction_ids=[donation.pk])[donation.pk]
    charity_line = lines(run)["charity"]
    assert (paid.run_id, paid.transfer_id) == (run.pk, charity_line.stripe_object_id)
    assert paid.paid_at == charity_line.paid_at is not None
