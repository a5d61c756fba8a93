"""Settlement against a live ledger, on PostgreSQL with real transactions: one open run
whoever races for it, a transaction committed after the run was made lands in the next run,
and runs made while partners keep posting miss nothing and take nothing twice."""

import threading
from datetime import timedelta

import pytest
from django.db import connection

from coalition.errors import ErrorCode
from coalition.models import LedgerTransaction
from settlement import services
from settlement.errors import CoalitionError
from settlement.models import SettlementClaim, SettlementRun
from tests import factories

from .conftest import days, make_partner

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def finish(run, approver, finance):
    """Approve and execute (nobody has Stripe accounts: lines fail, the run is no longer
    open)."""
    services.run_approve(run=run, approved_by=approver)
    services.run_execute(run=run, started_by=finance)
    run.refresh_from_db()
    assert not run.is_open


def test_two_clerks_racing_open_one_run(settlement_programme, base_time, post, finance, approver):
    partner = make_partner(
        "RACE", issuance="0.01", redemption="0.008", valid_from=base_time - days(9)
    )
    post.earn(factories.member(), partner, 1_000, base_time - days(1))
    clerks = [finance, approver]

    outcomes = factories.run_concurrently(
        2, lambda i: services.run_create(period_end=base_time, created_by=clerks[i]).pk
    )

    won = [value for status, value in outcomes if status == "ok"]
    lost = [value for status, value in outcomes if status == "error"]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert isinstance(lost[0], CoalitionError) and lost[0].code == ErrorCode.INVALID_STATE
    assert SettlementRun.objects.count() == 1
    assert SettlementClaim.objects.filter(run_id=won[0]).count() == 1


def test_a_transaction_committed_after_the_run_was_made_goes_to_the_next_run(
    settlement_programme, base_time, post, finance, approver
):
    partner = make_partner(
        "LATE", issuance="0.01", redemption="0.008", valid_from=base_time - days(9)
    )
    member = factories.member()
    post.earn(member, partner, 1_000, base_time - days(2))
    written, commit = threading.Event(), threading.Event()
    late = {}

    def slow_till():
        from django.db import transaction

        try:
            with transaction.atomic():
                # Dated before the period end, but not committed when the run is made.
                late["txn"] = post.earn(member, partner, 250, base_time - days(1))
                written.set()
                assert commit.wait(30)
        finally:
            connection.close()

    till = threading.Thread(target=slow_till)
    till.start()
    assert written.wait(30)
    first = services.run_create(period_end=base_time, created_by=finance)
    commit.set()
    till.join(30)

    late_id = late["txn"].pk
    assert LedgerTransaction.objects.filter(pk=late_id).exists()
    assert first.claimed_transactions == 1
    assert not SettlementClaim.objects.filter(transaction_id=late_id).exists()
    finish(first, approver, finance)

    second = services.run_create(period_end=base_time, created_by=finance)

    assert SettlementClaim.objects.get(transaction_id=late_id).run_id == second.pk
    assert second.claimed_transactions == 1
    assert second.lines.get().issued_points == 250


def test_runs_made_while_partners_post_miss_nothing_and_take_nothing_twice(
    settlement_programme, base_time, post, finance, approver
):
    partner = make_partner(
        "BUSY", issuance="0.01", redemption="0.008", valid_from=base_time - days(9)
    )
    members = [factories.member() for _ in range(4)]
    stop = threading.Event()
    errors = []

    def till(index):
        try:
            n = 0
            while not stop.is_set() and n < 60:
                post.earn(members[index], partner, 10 + n, base_time - timedelta(minutes=n + 1))
                n += 1
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    tills = [threading.Thread(target=till, args=(i,)) for i in range(4)]
    for thread in tills:
        thread.start()
    runs = []
    try:
        for _ in range(3):
            run = services.run_create(period_end=base_time, created_by=finance)
            runs.append(run)
            finish(run, approver, finance)
    finally:
        stop.set()
        for thread in tills:
            thread.join(60)
    assert not errors
    runs.append(services.run_create(period_end=base_time, created_by=finance))

    claimed = list(SettlementClaim.objects.values_list("transaction_id", flat=True))
    assert len(claimed) == len(set(claimed)) == LedgerTransaction.objects.count()
    assert sum(run.claimed_transactions for run in runs) == len(claimed)
    issued = sum(run.issued_points for run in runs)
    assert issued == sum(LedgerTransaction.objects.values_list("member_points", flat=True))
