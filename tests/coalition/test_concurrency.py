"""Races on PostgreSQL with real transactions, each thread on its own connection: nobody
spends the same points twice, and earning at one partner never queues on a shared row."""

import threading

import pytest
from django.db import transaction

from coalition import selectors, services
from coalition.errors import CoalitionError, ErrorCode
from coalition.models import Account, LedgerTransaction
from partners.models import Partner
from tests import factories

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def split(outcomes):
    """(results, errors) of a concurrent run."""
    results = [value for status, value in outcomes if status == "ok"]
    errors = [value for status, value in outcomes if status == "error"]
    return results, errors


def codes(errors) -> set:
    """The error codes seen; anything that is not a domain error (a deadlock, a serialization
    failure, a broken barrier) shows up as its class name and fails the comparison."""
    return {
        error.code if isinstance(error, CoalitionError) else type(error).__name__
        for error in errors
    }


def test_fifty_simultaneous_burns_never_spend_a_point_twice(member, partner):
    # Given a wallet with 1000 points
    factories.earn(member, partner, 1000)

    # When 50 tills redeem 30 points from it at the same moment
    outcomes = factories.run_concurrently(50, lambda _i: factories.burn(member, partner, 30))

    # Then exactly floor(1000 / 30) = 33 burns succeed and the others are INSUFFICIENT_POINTS;
    # no deadlock or serialization error reaches a caller
    burns, errors = split(outcomes)
    assert len(burns) == 33
    assert len(errors) == 17
    assert codes(errors) == {ErrorCode.INSUFFICIENT_POINTS}
    # And the balance is exact, to the point
    assert selectors.member_balance(member=member) == selectors.Balance(
        balance=10, held=0, spendable=10
    )
    redeemed = Account.objects.get(kind=Account.Kind.PARTNER_REDEEMED, partner=partner)
    assert selectors.account_balance(account_id=redeemed.pk) == 990
    assert selectors.ledger_check().ok


def test_burns_donations_and_holds_racing_for_the_same_points_cannot_overspend(
    member, partner, charity
):
    # Given a wallet with 1000 points
    factories.earn(member, partner, 1000)
    spends = [
        lambda: factories.burn(member, partner, 100),
        lambda: factories.donate(member, charity, 100),
        lambda: factories.hold(member, partner, 100),
    ]

    # When 30 requests of 100 points (burns, donations and holds) race for them
    outcomes = factories.run_concurrently(30, lambda i: spends[i % 3]())

    # Then exactly 10 win, and what they took adds up to the wallet
    winners, errors = split(outcomes)
    assert len(winners) == 10
    assert codes(errors) == {ErrorCode.INSUFFICIENT_POINTS}
    spent = 100 * sum(isinstance(w, LedgerTransaction) for w in winners)
    reserved = 100 * sum(not isinstance(w, LedgerTransaction) for w in winners)
    assert selectors.member_balance(member=member) == selectors.Balance(
        balance=1000 - spent, held=reserved, spendable=0
    )
    assert selectors.ledger_check().ok


def test_concurrent_holds_reserve_only_what_is_spendable(member, partner):
    # Given 1000 points, 200 of them already reserved
    factories.earn(member, partner, 1000)
    factories.hold(member, partner, 200)

    # When 20 tills authorise 300 points each at once
    outcomes = factories.run_concurrently(20, lambda _i: factories.hold(member, partner, 300))

    # Then only two fit into the 800 spendable points; the rest are INSUFFICIENT_POINTS
    holds, errors = split(outcomes)
    assert len(holds) == 2
    assert codes(errors) == {ErrorCode.INSUFFICIENT_POINTS}
    assert selectors.member_balance(member=member) == selectors.Balance(
        balance=1000, held=800, spendable=200
    )
    assert selectors.ledger_check().ok


def test_concurrent_partial_reversals_never_exceed_the_original(member, partner):
    # Given an earn of 100
    earn = factories.earn(member, partner, 100)

    # When 10 refunds of 30 points each are processed at once
    outcomes = factories.run_concurrently(10, lambda _i: factories.reverse(earn, 30))

    # Then three fit, the others are refused because only 10 points remain
    reversals, errors = split(outcomes)
    assert len(reversals) == 3
    assert codes(errors) == {ErrorCode.INVALID}
    assert services.reversible_points(earn) == 10
    assert selectors.member_balance(member=member).balance == 10
    assert selectors.ledger_check().ok


def test_concurrent_full_reversals_reverse_once(member, partner):
    # Given an earn of 100
    earn = factories.earn(member, partner, 100)

    # When 10 full refunds race (with different keys)
    outcomes = factories.run_concurrently(10, lambda _i: factories.reverse(earn))

    # Then one reverses it and the others are ALREADY_REVERSED
    reversals, errors = split(outcomes)
    assert len(reversals) == 1
    assert codes(errors) == {ErrorCode.ALREADY_REVERSED}
    assert selectors.member_balance(member=member).balance == 0
    assert selectors.ledger_check().ok


# --------------------------------------------------------------------------- no hot row

TILLS = 20


def _earn_and_wait_inside_the_transaction(member, partner, barrier, lock_partner=False):
    with transaction.atomic():
        if lock_partner:
            # What a hot row would do: every earn queueing on one shared row.
            Partner.objects.select_for_update().get(pk=partner.pk)
        txn = services.points_earn(
            caller=f"partner:{partner.pk}",
            idempotency_key=factories.key("till"),
            member=member,
            partner=partner,
            partner_points=100,
        )
        # Every till's transaction is still open here; all 20 must be open at once.
        barrier.wait()
    return txn.pk


def test_twenty_tills_earning_at_one_partner_do_not_wait_for_each_other(programme, partner):
    # Given 20 members and a partner already trading (its issued account exists)
    members = [factories.member() for _ in range(TILLS)]
    factories.earn(factories.member(), partner, 1)
    inside = threading.Barrier(TILLS, timeout=15)

    # When 20 tills each book an earn at that partner and keep their transaction open until
    # all 20 have booked theirs
    outcomes = factories.run_concurrently(
        TILLS,
        lambda i: _earn_and_wait_inside_the_transaction(members[i], partner, inside),
    )

    # Then all 20 transactions were open at the same moment (had the earns queued on one row,
    # the barrier would have timed out) and every earn committed
    txn_ids, errors = split(outcomes)
    assert errors == []
    assert len(set(txn_ids)) == TILLS
    assert [selectors.member_balance(member=m).balance for m in members] == [100] * TILLS
    issued = Account.objects.get(kind=Account.Kind.PARTNER_ISSUED, partner=partner)
    assert selectors.account_balance(account_id=issued.pk) == -(TILLS * 100 + 1)
    assert selectors.ledger_check().ok


def test_the_barrier_does_catch_earns_queueing_on_one_row(programme, partner):
    # Given the same 20 tills, but each earn first locking the partner row (a hot row)
    members = [factories.member() for _ in range(TILLS)]
    factories.earn(factories.member(), partner, 1)
    inside = threading.Barrier(TILLS, timeout=2)

    # When they run as above
    outcomes = factories.run_concurrently(
        TILLS,
        lambda i: _earn_and_wait_inside_the_transaction(
            members[i], partner, inside, lock_partner=True
        ),
    )

    # Then the barrier breaks: the measuring method detects serialised earns
    _, errors = split(outcomes)
    assert errors
    assert codes(errors) == {"BrokenBarrierError"}
