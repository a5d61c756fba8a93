"""Expiry of points into breakage, by time travel (`now=`) through the services."""

from datetime import UTC, datetime, timedelta

import pytest

from coalition import selectors, services
from coalition.errors import ErrorCode
from coalition.models import Account, LedgerTransaction, PointLot, Programme
from coalition.services import add_months
from tests import factories

T0 = datetime(2030, 1, 15, 9, 0, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


@pytest.fixture
def inactivity_6_months(programme):
    programme.expiry_policy = Programme.ExpiryPolicy.INACTIVITY
    programme.expiry_months = 6
    programme.save()
    return programme


def breakage() -> int:
    account = Account.objects.filter(kind=Account.Kind.BREAKAGE).first()
    return selectors.account_balance(account_id=account.pk) if account else 0


def remaining(member) -> list[int]:
    return list(member.lots.order_by("id").values_list("remaining", flat=True))


def test_a_lot_expires_exactly_at_its_expiry_and_not_a_microsecond_before(
    fixed_12_months, member, partner
):
    # Given 100 points earned at T0 under a 12-month lifetime
    factories.earn(member, partner, 100, now=T0)
    expires_at = PointLot.objects.get(member=member).expires_at
    assert expires_at == datetime(2031, 1, 15, 9, 0, tzinfo=UTC)

    # When the sweep runs a microsecond before the expiry
    before = factories.ledger_state()
    expired = services.points_expire_due(now=expires_at - MICROSECOND)

    # Then nothing expires and nothing is written
    assert expired == 0
    assert factories.ledger_state() == before

    # When it runs at the expiry itself
    expired = services.points_expire_due(now=expires_at)

    # Then the 100 points move from the wallet to programme breakage
    assert expired == 100
    expiry = LedgerTransaction.objects.get(kind=LedgerTransaction.Kind.EXPIRE)
    assert expiry.member_id == member.pk
    assert expiry.member_points == -100
    assert expiry.created_at == expires_at
    assert dict(expiry.entries.values_list("account__kind", "points")) == {
        "member_wallet": -100,
        "breakage": 100,
    }
    assert selectors.member_balance(member=member).balance == 0
    assert remaining(member) == [0]
    assert breakage() == 100
    assert selectors.ledger_check().ok


def test_the_earliest_expiring_points_are_spent_first(programme, member, partner):
    # Given 100 points with a 24-month life, then 100 more earned a day later under a new
    # 6-month rule: the later lot expires first
    programme.expiry_months = 24
    programme.save()
    factories.earn(member, partner, 100, now=T0)
    programme.expiry_months = 6
    programme.save()
    factories.earn(member, partner, 100, now=T0 + timedelta(days=1))
    long_lived, short_lived = PointLot.objects.order_by("id")
    assert short_lived.expires_at < long_lived.expires_at

    # When the member redeems 150
    factories.burn(member, partner, 150, now=T0 + timedelta(days=2))

    # Then the short-lived lot is used up first and 50 remain in the long-lived one
    assert remaining(member) == [50, 0]
    # And nothing is lost when the short-lived lot's date passes; the rest expires later
    assert services.points_expire_due(now=short_lived.expires_at) == 0
    assert services.points_expire_due(now=long_lived.expires_at) == 50
    assert selectors.member_balance(member=member).balance == 0
    assert selectors.ledger_check().ok


def test_expire_at_month_end_moves_the_expiry_to_the_first_instant_of_next_month(
    fixed_12_months, member, partner
):
    # Given a programme that expires at the end of the month a lifetime ends in
    fixed_12_months.expire_at_month_end = True
    fixed_12_months.save()

    # When 100 points are earned on 15 January 2030
    factories.earn(member, partner, 100, now=T0)

    # Then they last to the end of January 2031, and expire at midnight into February
    lot = PointLot.objects.get(member=member)
    assert lot.expires_at == datetime(2031, 2, 1, tzinfo=UTC)
    assert services.points_expire_due(now=datetime(2031, 2, 1, tzinfo=UTC) - MICROSECOND) == 0
    assert services.points_expire_due(now=datetime(2031, 2, 1, tzinfo=UTC)) == 100
    assert selectors.ledger_check().ok


def test_lifetimes_ending_in_a_shorter_month_are_clamped(programme):
    # Given a one-month lifetime and points earned on 31 January 2030 at noon
    programme.expiry_months = 1
    earned_at = datetime(2030, 1, 31, 12, 0, tzinfo=UTC)

    # When their expiry is computed, with and without the month-end option
    plain = services.lot_expiry(programme, earned_at)
    programme.expire_at_month_end = True
    month_end = services.lot_expiry(programme, earned_at)

    # Then the day is clamped to 28 February, or moved to the start of March
    assert plain == datetime(2030, 2, 28, 12, 0, tzinfo=UTC)
    assert month_end == datetime(2030, 3, 1, tzinfo=UTC)
    assert add_months(datetime(2031, 12, 31, tzinfo=UTC), 2) == datetime(2032, 2, 29, tzinfo=UTC)


def test_points_reserved_by_an_active_hold_are_not_expired(fixed_12_months, member, partner):
    # Given 100 points whose lot expires at E, and a hold of 60 authorised ten minutes before E
    factories.earn(member, partner, 100, now=T0)
    expires_at = PointLot.objects.get(member=member).expires_at
    hold = factories.hold(member, partner, 60, now=expires_at - timedelta(minutes=10))

    # When the sweep runs at E
    expired = services.points_expire_due(now=expires_at)

    # Then only the 40 unreserved points expire, and the till can still capture its 60
    assert expired == 40
    assert selectors.member_balance(member=member) == selectors.Balance(
        balance=60, held=60, spendable=0
    )
    factories.capture(hold, now=expires_at + timedelta(minutes=5))
    assert selectors.member_balance(member=member).balance == 0
    assert breakage() == 40
    assert selectors.ledger_check().ok


def test_points_released_by_a_voided_hold_expire_at_the_next_sweep(
    fixed_12_months, member, partner
):
    # Given 40 of 100 due points expired while a hold of 60 kept the rest
    factories.earn(member, partner, 100, now=T0)
    expires_at = PointLot.objects.get(member=member).expires_at
    hold = factories.hold(member, partner, 60, now=expires_at - timedelta(minutes=10))
    assert services.points_expire_due(now=expires_at) == 40

    # When the till voids the hold and the sweep runs again
    factories.void(hold, now=expires_at + timedelta(minutes=1))
    expired = services.points_expire_due(now=expires_at + timedelta(minutes=2))

    # Then the released 60 expire too
    assert expired == 60
    assert selectors.member_balance(member=member).balance == 0
    assert breakage() == 100
    assert selectors.ledger_check().ok


@pytest.mark.parametrize("activity", ["earn", "burn"])
def test_inactivity_expiry_resets_on_activity_and_then_takes_everything(
    inactivity_6_months, member, partner, activity
):
    # Given 100 points earned at T0 under a 6-months-of-inactivity rule (lots carry no date)
    factories.earn(member, partner, 100, now=T0)
    assert PointLot.objects.get(member=member).expires_at is None

    # When the member earns or redeems 10 points five months later
    active_again = add_months(T0, 5)
    if activity == "earn":
        factories.earn(member, partner, 10, now=active_again)
    else:
        factories.burn(member, partner, 10, now=active_again)
    points = selectors.member_balance(member=member).balance

    # Then six months after T0 nothing expires, nor a microsecond before six idle months
    assert services.points_expire_due(now=add_months(T0, 6)) == 0
    assert services.points_expire_due(now=add_months(active_again, 6) - MICROSECOND) == 0
    assert selectors.member_balance(member=member).balance == points

    # And after six idle months every point expires, whichever lot it is in
    assert services.points_expire_due(now=add_months(active_again, 6)) == points
    assert selectors.member_balance(member=member).balance == 0
    assert set(remaining(member)) == {0}
    assert breakage() == points
    assert selectors.ledger_check().ok


def test_inactivity_expiry_leaves_active_members_alone(
    inactivity_6_months, member, partner, programme
):
    # Given one member idle since T0 and another who earned two months later
    idle = member
    busy = factories.member()
    factories.earn(idle, partner, 100, now=T0)
    factories.earn(busy, partner, 100, now=add_months(T0, 2))

    # When the sweep runs six months after T0
    expired = services.points_expire_due(now=add_months(T0, 6))

    # Then only the idle member's points expire
    assert expired == 100
    assert selectors.member_balance(member=idle).balance == 0
    assert selectors.member_balance(member=busy).balance == 100


def test_the_none_policy_never_expires_points(programme, member, partner):
    # Given a programme whose points never expire
    programme.expiry_policy = Programme.ExpiryPolicy.NONE
    programme.save()
    factories.earn(member, partner, 100, now=T0)

    # When the sweep runs a century later
    before = factories.ledger_state()
    expired = services.points_expire_due(now=add_months(T0, 1200))

    # Then nothing expires and nothing is written
    assert expired == 0
    assert PointLot.objects.get(member=member).expires_at is None
    assert factories.ledger_state() == before


def test_running_the_sweep_twice_expires_once(fixed_12_months, partner):
    # Given three members with 100 due points each
    members = [factories.member() for _ in range(3)]
    for each in members:
        factories.earn(each, partner, 100, now=T0)
    due = add_months(T0, 12)

    # When the sweep runs twice (a retried job)
    first = services.points_expire_due(now=due)
    before_second = factories.ledger_state()
    second = services.points_expire_due(now=due)

    # Then the points expired once
    assert (first, second) == (300, 0)
    assert factories.ledger_state() == before_second
    assert LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.EXPIRE).count() == 3
    assert breakage() == 300
    assert selectors.ledger_check().ok


def test_the_sweep_works_in_batches(fixed_12_months, partner):
    # Given five members with due points
    members = [factories.member() for _ in range(5)]
    for each in members:
        factories.earn(each, partner, 10, now=T0)

    # When the sweep runs two members per batch
    expired = services.points_expire_due(now=add_months(T0, 12), batch_size=2)

    # Then it still reaches every member
    assert expired == 50
    assert breakage() == 50


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_expire_each_point_exactly_once(fixed_12_months, partner):
    # Given 20 members with 100 due points each and 10 that are not due yet
    members = [factories.member() for _ in range(20)]
    for each in members:
        factories.earn(each, partner, 100, now=T0)
        factories.earn(each, partner, 10, now=T0 + timedelta(days=40))
    due = add_months(T0, 12)

    # When two sweeps run at the same moment (two workers picked up the job)
    outcomes = factories.run_concurrently(
        2, lambda _i: services.points_expire_due(now=due, batch_size=7)
    )

    # Then between them they expired 2000 points, once each, and breakage holds exactly that
    assert [status for status, _ in outcomes] == ["ok", "ok"]
    assert sum(value for _, value in outcomes) == 2000
    assert LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.EXPIRE).count() == 20
    assert breakage() == 2000
    assert [selectors.member_balance(member=m).balance for m in members] == [10] * 20
    assert selectors.ledger_check().ok


# --------------------------------------------------------------------------- expiring points


def test_expiring_points_are_grouped_by_moment_within_the_window(fixed_12_months, member, partner):
    # Given lots earned at T0 (twice), T0 + 20 days and T0 + 60 days, and 20 points spent
    factories.earn(member, partner, 100, now=T0)
    factories.earn(member, partner, 50, now=T0)
    factories.earn(member, partner, 70, now=T0 + timedelta(days=20))
    factories.earn(member, partner, 30, now=T0 + timedelta(days=60))
    factories.burn(member, partner, 20, now=T0 + timedelta(days=61))
    first_expiry = add_months(T0, 12)
    now = first_expiry - timedelta(days=10)

    # When the member asks what expires in the next 30 days, and in the next 0 days
    within_30 = selectors.member_expiring_points(member=member, within_days=30, now=now)
    within_0 = selectors.member_expiring_points(member=member, within_days=0, now=now)

    # Then the first two lots are one group (less what was spent), the third is separate,
    # the fourth is beyond the window
    assert within_30 == [
        selectors.ExpiringPoints(points=130, expires_at=first_expiry),
        selectors.ExpiringPoints(points=70, expires_at=first_expiry + timedelta(days=20)),
    ]
    assert within_0 == []
    # And at the expiry moment itself a zero-day window includes it
    assert selectors.member_expiring_points(member=member, within_days=0, now=first_expiry) == [
        selectors.ExpiringPoints(points=130, expires_at=first_expiry)
    ]


@pytest.mark.parametrize("within_days", [-1, 1.5, "30", True])
def test_expiring_points_window_must_be_whole_days(member, within_days):
    # Given a malformed window
    # When the member asks for expiring points
    # Then it is refused as INVALID on withinDays
    with pytest.raises(services.InvalidInput) as refused:
        selectors.member_expiring_points(member=member, within_days=within_days)
    assert refused.value.code == ErrorCode.INVALID
    assert refused.value.field == "withinDays"


def test_expiring_points_under_inactivity_is_everything_spendable_at_the_idle_deadline(
    inactivity_6_months, member, partner
):
    # Given 100 points earned at T0, 30 of them reserved by a hold
    factories.earn(member, partner, 100, now=T0)
    factories.hold(member, partner, 30, now=T0)
    deadline = add_months(T0, 6)

    # When the member asks ten days before the idle deadline, and five months before it
    soon = selectors.member_expiring_points(member=member, now=deadline - timedelta(days=10))
    early = selectors.member_expiring_points(member=member, now=add_months(T0, 1))

    # Then the 70 spendable points show at the deadline, and nothing shows too early
    assert soon == [selectors.ExpiringPoints(points=70, expires_at=deadline)]
    assert early == []
