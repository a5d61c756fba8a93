"""Races on PostgreSQL with real transactions, each thread on its own connection: promotion
budgets and reward stock are never overspent, a referral bonus is given once, and an
unbudgeted promotion is not a row every till queues on."""

import threading

import pytest
from django.db import connection, transaction
from django.db.models import Sum

from coalition import selectors
from coalition.errors import CoalitionError, ErrorCode
from coalition.models import Account, LedgerTransaction
from partners import services
from partners.models import Promotion, PromotionAward, ReferralReward, Reward, RewardRedemption
from tests import factories

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def split(outcomes):
    results = [value for status, value in outcomes if status == "ok"]
    errors = [value for status, value in outcomes if status == "error"]
    return results, errors


def codes(errors) -> list:
    """Error codes; anything that is not a domain error shows up as its class name."""
    return [
        error.code if isinstance(error, CoalitionError) else type(error).__name__
        for error in errors
    ]


def test_promotion_budget_is_never_overspent_by_concurrent_purchases(partner, programme):
    # Given a coalition-wide +10 bonus with a budget of 55 points, and 20 members
    promotion = factories.promotion(
        partner=None, kind=Promotion.Kind.FIXED_BONUS, bonus_points=10, budget_points=55
    )
    members = [factories.member() for _ in range(20)]

    # When the 20 members buy for 10.00 at the same moment, at 20 tills
    outcomes = factories.run_concurrently(
        20, lambda i: factories.purchase(partner, members[i], "10.00")
    )

    # Then every purchase is recorded, and the bonus went out until the budget ran dry
    results, errors = split(outcomes)
    assert codes(errors) == []
    bonuses = sorted((result.points_awarded - 10 for result in results), reverse=True)
    assert bonuses == [10] * 5 + [5] + [0] * 14
    awarded = PromotionAward.objects.filter(promotion=promotion).aggregate(total=Sum("points"))
    promotion.refresh_from_db()
    assert awarded["total"] == promotion.awarded_points == 55 <= promotion.budget_points
    assert selectors.ledger_check().ok


def test_reward_stock_under_concurrency(partner, programme):
    # Given 5 mugs at 100 points, and 20 members with 150 points each
    mug = factories.reward(partner, name="Mug", points_cost=100, stock=5)
    members = [factories.member() for _ in range(20)]
    for member in members:
        factories.earn(member, partner, 150)

    # When all 20 redeem a mug at once
    outcomes = factories.run_concurrently(
        20,
        lambda i: services.reward_redeem(
            member=members[i], reward_id=mug.pk, idempotency_key=f"mug-{i}"
        ),
    )

    # Then exactly 5 get one, the others are told it is out of stock
    results, errors = split(outcomes)
    assert len(results) == 5
    assert codes(errors) == [ErrorCode.INVALID_STATE] * 15
    assert all("out of stock" in error.message for error in errors)
    assert Reward.objects.get(pk=mug.pk).stock == 0
    assert RewardRedemption.objects.filter(reward=mug).count() == 5
    # And the refused members lost no points
    winners = {redemption.member_id for redemption in results}
    balances = dict(Account.objects.filter(member__in=members).values_list("member_id", "balance"))
    assert sorted(balances.values()) == [50] * 5 + [150] * 15
    assert {member_id for member_id, points in balances.items() if points == 50} == winners
    assert selectors.ledger_check().ok


def test_referral_bonus_is_given_once_when_first_purchases_race(partner, programme):
    # Given a referral bonus and a referee who has not bought anything yet
    programme.referral_bonus_points = 200
    programme.save()
    referrer = factories.member()
    referee = factories.member(referred_by=referrer)

    # When the referee's first purchases arrive at 5 tills at once
    outcomes = factories.run_concurrently(
        5, lambda i: factories.purchase(partner, referee, "10.00")
    )

    # Then every purchase is recorded, and each of them got the bonus exactly once
    _results, errors = split(outcomes)
    assert codes(errors) == []
    assert ReferralReward.objects.filter(referee=referee).count() == 1
    assert selectors.member_balance(member=referrer).balance == 200
    assert selectors.member_balance(member=referee).balance == 5 * 10 + 200
    assert LedgerTransaction.objects.filter(kind="bonus").count() == 2


def test_earning_under_an_unbudgeted_promotion_does_not_queue_on_its_row(
    partner, member, programme
):
    # Given a coalition-wide bonus without a budget, whose row another transaction holds
    # locked the way a counter update takes it (FOR NO KEY UPDATE: awards still reference it)
    promotion = factories.promotion(partner=None, kind=Promotion.Kind.FIXED_BONUS, bonus_points=5)
    locked, release = threading.Event(), threading.Event()

    def hold_the_row():
        try:
            with transaction.atomic():
                Promotion.objects.select_for_update(no_key=True).get(pk=promotion.pk)
                locked.set()
                release.wait(30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    assert locked.wait(10)
    try:
        # When a purchase earns it, and would give up after waiting 1 s for a lock
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '1s'")
        result = factories.purchase(partner, member, "10.00")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
        release.set()
        holder.join(30)

    # Then it went through without waiting, and the award is recorded
    assert result.points_awarded == 15
    assert PromotionAward.objects.get(promotion=promotion).points == 5


@pytest.mark.parametrize("stock", [1, 5])
def test_a_double_click_on_a_reward_redeems_once_and_both_get_the_redemption(
    partner, programme, stock
):
    # Given a member with points and a reward (the last unit, or one of several)
    mug = factories.reward(partner, name="Mug", points_cost=100, stock=stock)
    member = factories.member()
    factories.earn(member, partner, 500)

    # When the portal sends the same redemption twice at once (the same key)
    outcomes = factories.run_concurrently(
        2,
        lambda i: services.reward_redeem(member=member, reward_id=mug.pk, idempotency_key="k"),
    )

    # Then both answers are the one redemption: no error, no "out of stock", one unit taken
    results, errors = split(outcomes)
    assert errors == []
    assert len({redemption.pk for redemption in results}) == 1
    assert Reward.objects.get(pk=mug.pk).stock == stock - 1
    assert Account.objects.get(member=member).balance == 400
    assert selectors.ledger_check().ok


def test_an_enrolment_sent_twice_at_once_enrols_once_and_both_get_the_member(programme):
    from coalition.models import Member

    partner, _ = factories.onboarded_partner()

    # When a partner's retry crosses its first request (the same key, the same details)
    outcomes = factories.run_concurrently(
        2,
        lambda i: services.member_enroll(
            partner=partner,
            idempotency_key="enrol-1",
            email="grace@example.com",
            display_name="Grace H",
            password="a-long-password",
        ),
    )

    # Then one member is enrolled and both answers are that member (one of them a replay)
    results, errors = split(outcomes)
    assert errors == []
    assert len({enrolment.member.pk for enrolment in results}) == 1
    assert sorted(enrolment.replayed for enrolment in results) == [False, True]
    assert Member.objects.filter(email__iexact="grace@example.com").count() == 1
