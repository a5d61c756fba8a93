"""The nightly tier recalculation in member-id chunks, a time budget per task run: a run that
runs out of time enqueues the next from its last member (through the outbox), so the night
reaches every member, and the outcome is the one-by-one rule's."""

from datetime import UTC, datetime, timedelta

import pytest

from coalition import services
from coalition.models import MemberTier, OutboxMessage, TierChange
from coalition.outbox import outbox_relay
from coalition.services import tiers as tiers_service
from coalition.tasks import recalculate_tiers
from tests import factories

T0 = datetime(2030, 1, 10, 12, 0, tzinfo=UTC)
NIGHT = T0 + timedelta(days=365, hours=1)  # the earns of T0 no longer qualify
GRACE = timedelta(days=30)

pytestmark = pytest.mark.django_db


# (points earned at T0, points earned at T0 + 200 days, marked below how long before NIGHT)
PROFILES = [
    (1200, 0, None),  # Silver, nothing left in the window: marked below tonight
    (1200, 0, GRACE + timedelta(days=1)),  # Silver, below for longer than the grace: Base
    (0, 1200, None),  # Silver and still above it: nothing changes
    (5000, 1500, GRACE),  # Gold, below it for exactly the grace: down to Silver
    (0, 1500, timedelta(days=3)),  # marked, but above the threshold again: cleared
    (0, 300, None),  # never reached Silver: no tier state, not looked at
    (600, 600, timedelta(days=10)),  # Silver, below, still within the grace: stays marked
]


@pytest.fixture
def members(programme, partner, tiers):
    """Ten members cycling through the profiles (nine with a tier state); the last one, far
    past the first chunk, has been below Silver for longer than the grace period."""
    made = []
    for index in range(10):
        profile = PROFILES[index % len(PROFILES)] if index < 9 else PROFILES[1]
        old, recent, below_for = profile
        member = factories.member()
        if old:
            factories.earn(member, partner, old, now=T0)
        if recent:
            factories.earn(member, partner, recent, now=T0 + timedelta(days=200))
        if below_for is not None:
            MemberTier.objects.filter(member=member).update(below_since=NIGHT - below_for)
        made.append(member)
    return made


def one_by_one(members, tiers) -> dict[int, tuple[str, datetime | None]]:
    """The rule, member by member: (tier code, below since) each member should end with."""
    ordered = sorted(tiers.values(), key=lambda tier: tier.qualifying_points)
    expected = {}
    for member in members:
        state = MemberTier.objects.select_related("tier").filter(member=member).first()
        if state is None:
            expected[member.pk] = ("base", None)
            continue
        points = services.qualifying_points(member=member, now=NIGHT)
        reached = tiers_service.tier_for_points(ordered, points) or ordered[0]
        if reached.qualifying_points >= state.tier.qualifying_points:
            expected[member.pk] = (reached.code, None)
        elif state.below_since is None:
            expected[member.pk] = (state.tier.code, NIGHT)
        elif NIGHT - state.below_since >= GRACE:
            expected[member.pk] = (reached.code, None)
        else:
            expected[member.pk] = (state.tier.code, state.below_since)
    return expected


def outcome(members) -> dict[int, tuple[str, datetime | None]]:
    result = {}
    for member in members:
        state = MemberTier.objects.select_related("tier").filter(member=member).first()
        result[member.pk] = (
            ("base", None) if state is None else (state.tier.code, state.below_since)
        )
    return result


def continuations() -> list[OutboxMessage]:
    return [
        message
        for message in OutboxMessage.objects.order_by("pk")
        if message.payload.get("task") == tiers_service.RECALCULATION_TASK
    ]


def test_a_small_budget_covers_every_member_across_several_runs(members, tiers, monkeypatch):
    # Given chunks of two members and a budget spent by the first chunk of every run
    monkeypatch.setattr(tiers_service, "RECALCULATION_CHUNK", 2)
    monkeypatch.setattr(tiers_service, "RECALCULATION_BUDGET", timedelta(0))
    expected = one_by_one(members, tiers)
    states = MemberTier.objects.exclude(tier=tiers["base"]).order_by("member_id")
    assert states.count() == 9  # five chunks
    first_chunk = list(states.values_list("member_id", flat=True)[:2])

    # When beat starts the night's task, and the outbox relay sends what each run enqueued
    first = recalculate_tiers(NIGHT.isoformat())
    outbox_relay()

    # Then the first run stopped after two members and handed over to the next ...
    assert first["resume_after"] == first_chunk[-1]
    # ... and so on: one run per chunk, each from where the last stopped, all as of NIGHT
    runs = continuations()
    assert len(runs) == 4
    assert [message.payload["args"][0] for message in runs] == [NIGHT.isoformat()] * 4
    assert all(message.dispatched_at for message in runs)
    assert [message.payload["args"][1] for message in runs] == sorted(
        message.payload["args"][1] for message in runs
    )
    # And every member ended as the one-by-one rule says
    assert outcome(members) == expected


def test_a_member_past_the_first_chunk_is_downgraded(members, tiers, monkeypatch):
    # Given the last member (highest id) below Silver for longer than the grace period
    monkeypatch.setattr(tiers_service, "RECALCULATION_CHUNK", 2)
    monkeypatch.setattr(tiers_service, "RECALCULATION_BUDGET", timedelta(0))
    last = members[-1]
    assert services.member_tier(member=last) == tiers["silver"]

    # When the night's recalculation runs to its end
    recalculate_tiers(NIGHT.isoformat())
    outbox_relay()

    # Then they are moved down, with the reason in their history
    assert services.member_tier(member=last) == tiers["base"]
    change = TierChange.objects.filter(member=last).first()
    assert (change.from_tier, change.to_tier, change.reason) == (
        tiers["silver"],
        tiers["base"],
        "recalculation",
    )


def test_a_run_without_a_budget_covers_every_member_in_one_call(members, tiers, monkeypatch):
    # Given small chunks, and no time budget (the service called directly)
    monkeypatch.setattr(tiers_service, "RECALCULATION_CHUNK", 2)
    expected = one_by_one(members, tiers)

    # When it runs
    counts = services.tiers_recalculate(now=NIGHT)

    # Then it went through every chunk in one call, enqueued nothing, and matches the rule
    assert continuations() == []
    assert outcome(members) == expected
    assert counts == {"downgraded": 4, "marked": 2, "cleared": 1}


def test_each_chunk_sums_its_qualifying_points_in_one_query(members, tiers):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    # When a run of chunks of five (nine members with a tier state: two chunks)
    with CaptureQueriesContext(connection) as queries:
        tiers_service.tiers_recalculate_chunks(now=NIGHT, budget=None, chunk_size=5)

    # Then the qualifying points were summed once per chunk, not once per member
    sums = [q["sql"] for q in queries if "SUM(" in q["sql"].upper()]
    assert len(sums) == 2
