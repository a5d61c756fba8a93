"""The set-based expiry sweep: chunks of members, holds, negative wallets, both policies, and
what concurrent sweeps and burns see (on PostgreSQL, in real threads)."""

import io
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from coalition import selectors, services
from coalition.errors import InsufficientPoints
from coalition.models import Entry, LedgerTransaction, PointLot, Programme
from coalition.services import add_months, expiry
from tests import factories

T0 = datetime(2030, 1, 15, 9, 0, tzinfo=UTC)
DUE = add_months(T0, 12)
EXPIRE = LedgerTransaction.Kind.EXPIRE


@pytest.fixture
def inactivity_6_months(programme):
    programme.expiry_policy = Programme.ExpiryPolicy.INACTIVITY
    programme.expiry_months = 6
    programme.save()
    return programme


def members_earned_at_t0(partner, count: int, points: int) -> list:
    """`count` new members who each earned `points` at the partner at T0."""
    members = [factories.member() for _ in range(count)]
    for each in members:
        factories.earn(each, partner, points, now=T0)
    return members


def expiries(member) -> list[LedgerTransaction]:
    return list(LedgerTransaction.objects.filter(kind=EXPIRE, member=member).order_by("id"))


def legs(txn) -> list[tuple[str, int]]:
    return list(
        Entry.objects.filter(transaction=txn).order_by("id").values_list("account__kind", "points")
    )


def remaining(member) -> list[int]:
    return list(member.lots.order_by("id").values_list("remaining", flat=True))


def check_ledger_output() -> str:
    """`manage.py check_ledger`'s report (it exits 1 on any breach)."""
    out = io.StringIO()
    call_command("check_ledger", stdout=out, stderr=out)
    return out.getvalue()


def test_a_sweep_over_more_members_than_a_chunk_posts_one_expiry_per_member(
    fixed_12_months, partner
):
    # Given seven members, each with two due lots (100 at T0, 50 a day later, 30 of them
    # already spent) and a lot of 10 that is not due yet
    members = members_earned_at_t0(partner, 7, 100)
    for each in members:
        factories.earn(each, partner, 50, now=T0 + timedelta(days=1))
        factories.earn(each, partner, 10, now=T0 + timedelta(days=40))
        factories.burn(each, partner, 30, now=T0 + timedelta(days=41))
    # (the burn took 30 from the first lot, the one that expires first)

    # When the sweep runs after both lots' expiry, three members per chunk
    expired = services.points_expire_due(now=DUE + timedelta(days=1), batch_size=3)

    # Then every member lost exactly its 120 due points in one EXPIRE transaction, wallet
    # first, then breakage, with the lots it took in the order they expire
    assert expired == 7 * 120
    for each in members:
        (expiry_txn,) = expiries(each)
        first, second, later = each.lots.order_by("id")
        assert expiry_txn.member_points == -120
        assert expiry_txn.caller == "system:expiry"
        assert expiry_txn.idempotency_key is None
        assert expiry_txn.created_at == DUE + timedelta(days=1)
        assert expiry_txn.metadata == {
            "lots": [[first.pk, 70], [second.pk, 50]],
            "policy": "fixed",
        }
        assert legs(expiry_txn) == [("member_wallet", -120), ("breakage", 120)]
        assert remaining(each) == [0, 0, 10]
        assert selectors.member_balance(member=each).balance == 10
    assert selectors.ledger_check().ok


def test_chunk_boundaries_do_not_change_the_result(fixed_12_months, partner):
    # Given five members with 40, 41, ... 44 due points
    members = [factories.member() for _ in range(5)]
    for n, each in enumerate(members):
        factories.earn(each, partner, 40 + n, now=T0)

    # When one sweep runs with one member per chunk and, later, nothing is left for another
    first = services.points_expire_due(now=DUE, batch_size=1)
    second = services.points_expire_due(now=DUE, batch_size=1000)

    # Then every member expired once, whatever the chunk size
    assert (first, second) == (sum(range(40, 45)), 0)
    assert [len(expiries(each)) for each in members] == [1] * 5
    assert [selectors.member_balance(member=each).balance for each in members] == [0] * 5


def test_held_points_never_expire_and_a_fully_held_wallet_is_left_alone(fixed_12_months, partner):
    # Given one member with 100 due points of which a hold reserves 60, and another whose
    # hold reserves all 100
    partly, fully = factories.member(), factories.member()
    for each in (partly, fully):
        factories.earn(each, partner, 100, now=T0)
    factories.hold(partly, partner, 60, now=DUE - timedelta(minutes=10))
    factories.hold(fully, partner, 100, now=DUE - timedelta(minutes=10))

    # When the sweep runs at the lots' expiry
    expired = services.points_expire_due(now=DUE)

    # Then only the 40 unreserved points expire; the fully held wallet gets no transaction
    assert expired == 40
    assert selectors.member_balance(member=partly) == selectors.Balance(
        balance=60, held=60, spendable=0
    )
    assert remaining(partly) == [60]
    assert expiries(fully) == []
    assert selectors.member_balance(member=fully).balance == 100
    assert selectors.ledger_check().ok


def test_negative_and_empty_wallets_are_skipped(fixed_12_months, partner):
    # Given a member a reversal took to -80, one who spent everything, and a plain one
    negative = factories.member()
    earned = factories.earn(negative, partner, 100, now=T0)
    factories.burn(negative, partner, 80, now=T0 + timedelta(days=1))
    factories.reverse(earned, now=T0 + timedelta(days=2))
    assert selectors.member_balance(member=negative).balance == -80
    empty = factories.member()
    factories.earn(empty, partner, 100, now=T0)
    factories.burn(empty, partner, 100, now=T0 + timedelta(days=1))
    plain = factories.member()
    factories.earn(plain, partner, 25, now=T0)

    # When the sweep runs after every lot's expiry
    expired = services.points_expire_due(now=DUE + timedelta(days=3))

    # Then only the plain member's points expire; the others are untouched
    assert expired == 25
    assert expiries(negative) == [] and expiries(empty) == []
    assert selectors.member_balance(member=negative).balance == -80
    assert selectors.member_balance(member=empty).balance == 0
    assert selectors.ledger_check().ok


def test_inactivity_over_several_chunks_takes_every_lot_of_idle_members_only(
    inactivity_6_months, partner
):
    # Given five idle members (two lots each, since T0) and two who earned last month
    idle = [factories.member() for _ in range(5)]
    busy = [factories.member() for _ in range(2)]
    for each in idle:
        factories.earn(each, partner, 30, now=T0)
        factories.earn(each, partner, 20, now=T0 + timedelta(days=1))
    now = add_months(T0 + timedelta(days=1), 6)
    for each in busy:
        factories.earn(each, partner, 70, now=now - timedelta(days=30))

    # When the sweep runs, two members per chunk
    expired = services.points_expire_due(now=now, batch_size=2)

    # Then each idle member lost all 50 points in one transaction, the busy ones nothing
    assert expired == 5 * 50
    for each in idle:
        (expiry_txn,) = expiries(each)
        first, second = each.lots.order_by("id")
        assert expiry_txn.metadata == {
            "lots": [[first.pk, 30], [second.pk, 20]],
            "policy": "inactivity",
        }
        assert remaining(each) == [0, 0]
    assert [selectors.member_balance(member=each).balance for each in busy] == [70, 70]
    assert selectors.ledger_check().ok


def test_a_member_active_again_after_the_chunk_was_listed_keeps_the_points(
    inactivity_6_months, partner, monkeypatch
):
    # Given two members idle for six months; one of them redeems just after the sweep has
    # listed its next chunk (the listing runs before the chunk's lock)
    sleepy, woken = factories.member(), factories.member()
    for each in (sleepy, woken):
        factories.earn(each, partner, 100, now=T0)
    now = add_months(T0, 6)
    listed = expiry._due_members

    def list_then_burn(*args, **kwargs):
        found = listed(*args, **kwargs)
        if woken.pk in found:
            factories.burn(woken, partner, 10, now=now)
        return found

    monkeypatch.setattr(expiry, "_due_members", list_then_burn)

    # When the sweep runs
    expired = services.points_expire_due(now=now)

    # Then the woken member keeps its 90 points; the other one's expire
    assert expired == 100
    assert expiries(woken) == []
    assert selectors.member_balance(member=woken).balance == 90
    assert selectors.member_balance(member=sleepy).balance == 0


def test_the_rule_is_shared_with_what_would_expire(fixed_12_months, partner):
    # Given a member with 100 due points, 30 reserved by a hold
    member = factories.member()
    factories.earn(member, partner, 100, now=T0)
    factories.hold(member, partner, 30, now=DUE - timedelta(minutes=1))

    # When asked what is due, then when the sweep runs
    due = expiry.expiry_due(member_ids=[member.pk], programme=fixed_12_months, now=DUE)
    expired = services.points_expire_due(now=DUE)

    # Then both say 70, from the one lot
    lot = PointLot.objects.get(member=member)
    assert due[member.pk].points == 70 and due[member.pk].lots == [[lot.pk, 70]]
    assert expired == 70


# --------------------------------------------------------------------------- concurrency


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_in_small_chunks_expire_each_point_once(fixed_12_months, partner):
    # Given 25 members with 100 due points and 10 that are not due yet
    members = members_earned_at_t0(partner, 25, 100)
    for each in members:
        factories.earn(each, partner, 10, now=T0 + timedelta(days=40))

    # When three sweeps run at once, four members per chunk
    outcomes = factories.run_concurrently(
        3, lambda _i: services.points_expire_due(now=DUE, batch_size=4)
    )

    # Then between them they expired 2,500 points, one transaction per member
    assert [status for status, _ in outcomes] == ["ok"] * 3, outcomes
    assert sum(value for _, value in outcomes) == 2500
    assert [len(expiries(each)) for each in members] == [1] * 25
    assert [selectors.member_balance(member=each).balance for each in members] == [10] * 25
    assert "broken" not in check_ledger_output()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_burns_racing_the_sweep_never_overspend(fixed_12_months, partner):
    # Given 20 members with 100 due points each
    members = members_earned_at_t0(partner, 20, 100)

    # When a sweep (three members per chunk) runs while three threads try to burn 60 points
    # from every member
    def work(index: int):
        if index == 0:
            return services.points_expire_due(now=DUE, batch_size=3)
        burned = 0
        for each in members[index - 1 :: 3]:
            try:
                factories.burn(each, partner, 60, now=DUE)
                burned += 60
            except InsufficientPoints:
                pass
        return burned

    outcomes = factories.run_concurrently(4, work)

    # Then every member's 100 points went once: to a burn of 60 and 40 to breakage, or all
    # to breakage; no wallet went below zero and the ledger proves itself
    assert [status for status, _ in outcomes] == ["ok"] * 4, outcomes
    expired, burned = outcomes[0][1], sum(value for _, value in outcomes[1:])
    assert expired + burned == 2000
    for each in members:
        balance = selectors.member_balance(member=each)
        assert balance.balance == 0
        took = [txn.member_points for txn in expiries(each)]
        assert took in ([-100], [-40]), took
    assert "broken" not in check_ledger_output()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_ranges_expire_exactly_what_one_sweep_expires(fixed_12_months, partner):
    # Given 30 members with a due lot each (10 + n points) and a lot not due yet
    members = [factories.member() for _ in range(30)]
    for index, each in enumerate(members):
        factories.earn(each, partner, 10 + index, now=T0)
        factories.earn(each, partner, 5, now=T0 + timedelta(days=40))

    # When the sweep runs in three parallel ranges of members (own connections), 4 a chunk
    expired = services.points_expire_due(now=DUE + timedelta(days=1), batch_size=4, workers=3)

    # Then every member lost its due points once, the lot not due is left, the ledger ties
    assert expired == sum(10 + index for index in range(30))
    assert all(len(expiries(each)) == 1 for each in members)
    assert all(factories.wallet(each).balance == 5 for each in members)
    assert "ledger ok" in check_ledger_output()
    # and a second parallel sweep finds nothing left to do
    assert services.points_expire_due(now=DUE + timedelta(days=1), workers=3) == 0


def _collected(obj) -> bool:
    """Would a garbage collection walk `obj`? (Frozen objects are out of every generation.)"""
    import gc

    return any(each is obj for each in gc.get_objects())


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("workers", [1, 2])
def test_no_garbage_collection_walks_the_process_while_a_chunk_holds_wallets(
    fixed_12_months, partner, monkeypatch, workers
):
    # Given members with due points, and a process holding objects of its own
    import gc

    members_earned_at_t0(partner, 6, 10)
    held_before = ["an object the process made before the sweep"]
    assert gc.get_freeze_count() == 0 and _collected(held_before)
    walked_during_chunks = []
    chunk = expiry._expire_chunk

    def watched(*args, **kwargs):
        walked_during_chunks.append(_collected(held_before))
        return chunk(*args, **kwargs)

    monkeypatch.setattr(expiry, "_expire_chunk", watched)

    # When the sweep runs (in one range, and in two threads)
    expired = services.points_expire_due(now=DUE + timedelta(days=1), batch_size=2, workers=workers)

    # Then while each chunk held its wallets, what the process held before was left out of the
    # collector (a full collection would have stopped the chunk), and it is back in afterwards
    assert expired == 60
    assert len(walked_during_chunks) >= 3
    assert walked_during_chunks == [False] * len(walked_during_chunks)
    assert _collected(held_before)
    assert gc.get_freeze_count() == 0


def test_overlapping_sweeps_thaw_the_collector_when_the_last_one_ends():
    import gc
    import threading

    held = ["an object the process made before both sweeps"]
    first_in, first_may_end = threading.Event(), threading.Event()

    def first_sweep():
        with expiry._collector_frozen():
            first_in.set()
            first_may_end.wait(10)

    # Given a sweep running in one thread
    thread = threading.Thread(target=first_sweep)
    thread.start()
    try:
        assert first_in.wait(10)
        assert not _collected(held)

        # When a second sweep starts and ends in another while the first still runs
        with expiry._collector_frozen():
            assert not _collected(held)

        # Then the process stays frozen for the first sweep, and thaws once it ends too
        assert not _collected(held)
    finally:
        first_may_end.set()
        thread.join(10)
    assert _collected(held)
    assert gc.get_freeze_count() == 0


@pytest.mark.django_db
def test_a_failing_sweep_thaws_the_collector_and_a_process_frozen_before_is_left_as_it_was(
    fixed_12_months, partner, monkeypatch
):
    import gc

    member = factories.member()
    factories.earn(member, partner, 10, now=T0)
    made_since = []
    walked = []

    def broken(*args, **kwargs):
        walked.append(_collected(made_since))
        raise RuntimeError("database gone")

    monkeypatch.setattr(expiry, "_expire_chunk", broken)
    # A sweep that fails still gives the process's objects back to the collector
    with pytest.raises(RuntimeError, match="database gone"):
        services.points_expire_due(now=DUE + timedelta(days=1), workers=1)
    assert gc.get_freeze_count() == 0
    assert walked == [False] and _collected(made_since)

    # A process that froze its objects itself (a preloading server) keeps its own freeze, and
    # what it made since is neither frozen by the sweep nor lost to the collector after it
    frozen_by_the_process = ["frozen by the process"]
    gc.freeze()
    try:
        made_since = ["made after the process froze itself"]
        walked.clear()
        with pytest.raises(RuntimeError, match="database gone"):
            services.points_expire_due(now=DUE + timedelta(days=1), workers=1)
        assert walked == [True]
        assert _collected(made_since)
        assert not _collected(frozen_by_the_process)
    finally:
        gc.unfreeze()


def _synchronous_commit() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


@pytest.fixture
def commit_modes(monkeypatch) -> list[str]:
    """The `synchronous_commit` each expiry chunk ran under, in order."""
    seen: list[str] = []
    take = expiry._lots_take

    def watched(taken):
        seen.append(_synchronous_commit())
        return take(taken)

    monkeypatch.setattr(expiry, "_lots_take", watched)
    return seen


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_chunk_commits_without_waiting_for_the_disk_and_only_itself(
    fixed_12_months, partner, commit_modes
):
    from coalition.models import Account
    from coalition.services.posting import system_account_id

    # Given members with due points, in a programme whose points expired before (its
    # breakage account exists)
    members = members_earned_at_t0(partner, 4, 10)
    system_account_id(Account.Kind.BREAKAGE)
    seen = commit_modes

    # When the sweep runs on its own, each chunk in its own transaction
    assert services.points_expire_due(now=DUE + timedelta(days=1), batch_size=2, workers=1) == 40

    # Then each chunk's commit did not wait for the WAL flush (its wallets are released
    # sooner), and the connection is back to the server's setting for every other write
    assert seen == ["off", "off"]
    assert _synchronous_commit() == "on"
    factories.earn(members[0], partner, 5, now=DUE + timedelta(days=2))
    assert _synchronous_commit() == "on"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("callers", ["atomic", "autocommit off"])
def test_a_sweep_inside_a_callers_transaction_stays_in_it_and_leaves_its_commit_synchronous(
    fixed_12_months, partner, commit_modes, callers
):
    from django.db import transaction

    member = factories.member()
    factories.earn(member, partner, 10, now=T0)
    own_transaction = (
        transaction.atomic if callers == "atomic" else factories.callers_own_transaction
    )

    # When a caller sweeps inside its own transaction (an `atomic()`, or a connection it took
    # out of autocommit), with writes of its own, and commits
    with own_transaction():
        factories.earn(member, partner, 3, now=DUE)
        expired = services.points_expire_due(now=DUE + timedelta(days=1), workers=2)

    # Then the sweep stayed in the caller's transaction (one range: other connections could
    # not see what it has not committed), and the caller's commit waited for the disk as
    # always: the chunk changed nothing
    assert expired == 10
    assert commit_modes == ["on"]
    assert factories.wallet(member).balance == 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_chunk_that_makes_the_breakage_account_commits_waiting_for_the_disk(
    fixed_12_months, partner, commit_modes
):
    from coalition.models import Account
    from coalition.services.posting import caches_clear

    # Given a programme whose points never expired yet (no breakage account) and members with
    # due points
    members_earned_at_t0(partner, 4, 10)
    caches_clear()
    assert not Account.objects.filter(kind=Account.Kind.BREAKAGE).exists()

    # When a sweep finds nothing due yet
    assert services.points_expire_due(now=T0 + timedelta(days=1), workers=1) == 0

    # Then it wrote nothing, not even the account
    assert not Account.objects.filter(kind=Account.Kind.BREAKAGE).exists()

    # When the first sweep with due points runs, two members a chunk
    assert services.points_expire_due(now=DUE + timedelta(days=1), batch_size=2, workers=1) == 40

    # Then the chunk that made the account committed as every write does (a crash cannot take
    # back the account whose id the process now remembers); the next did not wait
    assert commit_modes == ["on", "off"]
    breakage = Account.objects.get(kind=Account.Kind.BREAKAGE)
    assert Entry.objects.filter(account=breakage).count() == 4
