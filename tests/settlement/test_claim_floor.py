"""The claim floor (settlement/services/computation.py): a run reads the ledger from the
floor its predecessors left, never missing a transaction — one still open when the run is
made is waited for, one dated after the period end holds the floor back until it is due, and
a discarded run's floor counts for nothing."""

import threading
import time

import pytest
from django.db import connection, transaction
from django.test import override_settings

from coalition.models import LedgerTransaction
from settlement import services
from settlement.models import SettlementClaim
from tests import factories

from .conftest import days, make_partner

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def finish(run, approver, finance):
    services.run_approve(run=run, approved_by=approver)
    services.run_execute(run=run, started_by=finance)


@pytest.fixture
def partner(settlement_programme, base_time):
    return make_partner(
        "FLOOR", issuance="0.01", redemption="0.008", valid_from=base_time - days(9)
    )


def test_the_floor_stops_at_a_transaction_not_due_yet_which_the_next_run_claims(
    partner, base_time, post, finance, approver
):
    # Given a due earn, an earn dated after the period end, and another due earn after it
    member = factories.member()
    due = post.earn(member, partner, 100, base_time - days(2))
    not_due = post.earn(member, partner, 200, base_time + days(1))
    due_later = post.earn(member, partner, 300, base_time - days(1))

    # When a run settles up to the period end
    first = services.run_create(period_end=base_time, created_by=finance)

    # Then it claims the two due ones, and its floor stays at the one not due yet
    claimed = set(
        SettlementClaim.objects.filter(run=first).values_list("transaction_id", flat=True)
    )
    assert claimed == {due.pk, due_later.pk}
    assert first.claim_floor_id == not_due.pk

    # And the next run, once it is due, claims it (and only it), reading from that floor
    finish(first, approver, finance)
    after = post.earn(member, partner, 400, base_time + days(2))
    second = services.run_create(period_end=base_time + days(3), created_by=finance)
    claimed = set(
        SettlementClaim.objects.filter(run=second).values_list("transaction_id", flat=True)
    )
    assert claimed == {not_due.pk, after.pk}
    assert second.claim_floor_id > after.pk


def test_a_write_open_when_the_run_is_made_is_waited_for_and_claimed(
    partner, base_time, post, finance
):
    # Given an earn being written by a till that commits half a second later
    member = factories.member()
    post.earn(member, partner, 100, base_time - days(2))
    written, late = threading.Event(), {}

    def slow_till():
        try:
            with transaction.atomic():
                late["txn"] = post.earn(member, partner, 250, base_time - days(1))
                written.set()
                time.sleep(0.5)
        finally:
            connection.close()

    till = threading.Thread(target=slow_till)
    till.start()
    assert written.wait(30)

    # When a run is made meanwhile (its claim waits up to 10 s for open transactions)
    with override_settings(SETTLEMENT_CLAIM_WAIT_SECONDS=10):
        started = time.monotonic()
        run = services.run_create(period_end=base_time, created_by=finance)
        waited = time.monotonic() - started
    till.join(30)

    # Then it waited for the till, claimed its earn, and its floor is past it
    assert waited >= 0.3
    assert SettlementClaim.objects.get(transaction_id=late["txn"].pk).run_id == run.pk
    assert run.claimed_transactions == 2
    assert run.claim_floor_id > late["txn"].pk


def test_a_discarded_runs_floor_counts_for_nothing(partner, base_time, post, finance):
    # Given a run made and discarded (its claims go back to the pool)
    member = factories.member()
    earns = [post.earn(member, partner, 10 * (i + 1), base_time - days(2)) for i in range(3)]
    discarded = services.run_create(period_end=base_time, created_by=finance)
    assert discarded.claim_floor_id > earns[-1].pk
    services.run_discard(run=discarded, discarded_by=finance, reason="wrong cut-off")

    # When the next run is made
    again = services.run_create(period_end=base_time, created_by=finance)

    # Then it claims every transaction again
    claimed = set(
        SettlementClaim.objects.filter(run=again).values_list("transaction_id", flat=True)
    )
    assert claimed == {earn.pk for earn in earns}
    assert LedgerTransaction.objects.count() == 3
