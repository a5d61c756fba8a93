"""Tiers: up at once on the earn that crosses a threshold, never down on a burn, down only at
the nightly recalculation after the programme's grace period below the threshold."""

from datetime import UTC, datetime, timedelta

import pytest

from coalition import services
from coalition.models import MemberTier, Tier, TierChange
from tests import factories

T0 = datetime(2030, 1, 10, 12, 0, tzinfo=UTC)
YEAR = timedelta(days=365)


@pytest.fixture
def silver_member(member, partner, tiers, django_capture_on_commit_callbacks):
    """A member who earned 600 at T0 and 450 at T0 + 100 days: Silver since then. A year
    after T0 only the 450 qualify, until T0 + 465 days."""
    with django_capture_on_commit_callbacks(execute=True):
        factories.purchase(partner, member, "600.00", now=T0)
        factories.purchase(partner, member, "450.00", now=T0 + timedelta(days=100))
    return member


def tier_of(member) -> Tier:
    return services.member_tier(member=member)


def state_of(member) -> MemberTier:
    return MemberTier.objects.get(member=member)


def test_upgrade_on_the_earn_that_crosses_the_threshold(
    member, partner, tiers, mailoutbox, django_capture_on_commit_callbacks
):
    # Given a Base member with 600 qualifying points
    with django_capture_on_commit_callbacks(execute=True):
        factories.purchase(partner, member, "600.00", now=T0)
    assert tier_of(member) == tiers["base"]
    assert mailoutbox == []

    # When a purchase takes them to 1050
    with django_capture_on_commit_callbacks(execute=True):
        factories.purchase(partner, member, "450.00", now=T0 + timedelta(days=1))

    # Then they are Silver at once, the history says why, and they are told by email
    assert tier_of(member) == tiers["silver"]
    (change,) = TierChange.objects.filter(member=member)
    assert (change.from_tier, change.to_tier, change.reason, change.qualifying_points) == (
        tiers["base"],
        tiers["silver"],
        "earn",
        1050,
    )
    (email,) = mailoutbox
    assert email.to == [member.email]
    assert "Silver" in email.subject


def test_a_burn_never_moves_a_member_down(silver_member, partner):
    # When a Silver member spends most of their points
    factories.burn(silver_member, partner, 1000, now=T0 + timedelta(days=101))
    counts = services.tiers_recalculate(now=T0 + timedelta(days=102))

    # Then they are still Silver, not even marked below
    assert tier_of(silver_member).code == "silver"
    assert state_of(silver_member).below_since is None
    assert counts == {"downgraded": 0, "marked": 0, "cleared": 0}


def test_nightly_recalculation_marks_then_downgrades_after_the_grace_period(
    silver_member, tiers, mailoutbox, django_capture_on_commit_callbacks
):
    # Given a year later the 600 points of T0 no longer qualify (450 left, below Silver)
    mailoutbox.clear()
    night = T0 + YEAR + timedelta(hours=1)

    # When the nightly job runs that night
    counts = services.tiers_recalculate(now=night)

    # Then the member is marked below, still Silver
    assert counts["marked"] == 1
    assert state_of(silver_member).below_since == night
    assert tier_of(silver_member) == tiers["silver"]

    # When it runs every night of the 30-day grace period
    for day in range(1, 30):
        services.tiers_recalculate(now=night + timedelta(days=day))

    # Then the member is still Silver
    assert tier_of(silver_member) == tiers["silver"]

    # When the grace period is over
    with django_capture_on_commit_callbacks(execute=True):
        counts = services.tiers_recalculate(now=night + timedelta(days=30))

    # Then they move down, with the reason in their history, and are told
    assert counts["downgraded"] == 1
    assert tier_of(silver_member) == tiers["base"]
    assert state_of(silver_member).below_since is None
    latest = TierChange.objects.filter(member=silver_member).first()
    assert (latest.from_tier, latest.to_tier, latest.reason) == (
        tiers["silver"],
        tiers["base"],
        "recalculation",
    )
    (email,) = mailoutbox
    assert "Base" in email.subject


def test_the_grace_period_is_the_programmes(silver_member, tiers, programme):
    # Given a programme with a 7-day grace period and a member marked below
    programme.tier_grace_days = 7
    programme.save()
    night = T0 + YEAR + timedelta(hours=1)
    services.tiers_recalculate(now=night)

    # When 6 then 7 days have passed
    services.tiers_recalculate(now=night + timedelta(days=6))
    after_six = tier_of(silver_member)
    services.tiers_recalculate(now=night + timedelta(days=7))

    # Then the downgrade comes on the 7th day
    assert after_six == tiers["silver"]
    assert tier_of(silver_member) == tiers["base"]


def test_earning_back_above_the_threshold_clears_the_mark(silver_member, partner, tiers):
    # Given a member marked below Silver
    night = T0 + YEAR + timedelta(hours=1)
    services.tiers_recalculate(now=night)
    assert state_of(silver_member).below_since == night

    # When they earn enough to be above it again, within the grace period
    factories.purchase(partner, silver_member, "600.00", now=night + timedelta(days=5))

    # Then the mark is gone and the end of the grace period changes nothing
    assert state_of(silver_member).below_since is None
    counts = services.tiers_recalculate(now=night + timedelta(days=31))
    assert counts == {"downgraded": 0, "marked": 0, "cleared": 0}
    assert tier_of(silver_member) == tiers["silver"]


def test_a_lowered_threshold_clears_the_mark_at_the_next_recalculation(silver_member, tiers):
    # Given a member marked below Silver with 450 qualifying points
    night = T0 + YEAR + timedelta(hours=1)
    services.tiers_recalculate(now=night)

    # When the operator lowers Silver to 400 points
    Tier.objects.filter(pk=tiers["silver"].pk).update(qualifying_points=400)
    counts = services.tiers_recalculate(now=night + timedelta(days=1))

    # Then the member is no longer below it, and stays Silver past the grace period
    assert counts["cleared"] == 1
    assert state_of(silver_member).below_since is None
    services.tiers_recalculate(now=night + timedelta(days=40))
    assert tier_of(silver_member).code == "silver"


def test_crossing_two_thresholds_at_once_goes_straight_to_the_higher(member, partner, tiers):
    factories.purchase(partner, member, "5000.00", now=T0)

    assert tier_of(member) == tiers["gold"]
    assert TierChange.objects.filter(member=member).count() == 1


def test_a_gold_member_earns_without_their_year_being_summed_until_marked_below(
    member, partner, tiers
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    # Given a Gold member (the top tier)
    factories.purchase(partner, member, "5000.00", now=T0)
    assert tier_of(member) == tiers["gold"]

    # When they earn again
    with CaptureQueriesContext(connection) as queries:
        factories.earn(member, partner, 10, now=T0 + timedelta(days=1))

    # Then nothing could move, and their twelve months of earns were not summed for it
    sums = [q["sql"] for q in queries if "SUM(" in q["sql"].upper()]
    assert sums == []
    assert TierChange.objects.filter(member=member).count() == 1

    # But once the nightly run marks them below Gold, an earn that takes them back above
    # the threshold clears the mark (so the sum is made then)
    night = T0 + YEAR + timedelta(hours=1)
    services.tiers_recalculate(now=night)
    assert state_of(member).below_since == night
    factories.earn(member, partner, 5000, now=night + timedelta(days=1))
    assert state_of(member).below_since is None
    assert tier_of(member) == tiers["gold"]
