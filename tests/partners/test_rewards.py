"""Catalogue rewards bought with points: the burn and the stock move together or not at all."""

from datetime import timedelta

import pytest
from django.utils import timezone

from coalition import selectors
from coalition.errors import ErrorCode
from partners import selectors as partner_selectors
from partners import services
from partners.models import Reward, RewardRedemption
from tests import factories


@pytest.fixture
def brand(db):
    partner, _key = factories.onboarded_partner()
    return partner


@pytest.fixture
def rich_member(member, brand):
    """A member with 1000 points."""
    factories.earn(member, brand, 1000)
    return member


def redeem_reward(member, reward, **kwargs):
    kwargs.setdefault("idempotency_key", factories.key("reward"))
    return services.reward_redeem(member=member, reward_id=reward.pk, **kwargs)


def stock(reward) -> int | None:
    return Reward.objects.get(pk=reward.pk).stock


def test_redeeming_a_reward_burns_its_points_and_takes_one_from_stock(rich_member, brand):
    # Given a 300-point reward with 2 in stock
    mug = factories.reward(brand, name="Mug", points_cost=300, stock=2)

    # When the member redeems it
    redemption = redeem_reward(rich_member, mug)

    # Then 300 points are burned at the partner and one mug is gone
    assert selectors.member_balance(member=rich_member).balance == 700
    assert stock(mug) == 1
    txn = redemption.transaction
    assert (txn.kind, txn.member_points, txn.partner_id) == ("burn", -300, brand.pk)
    assert txn.metadata["rewardName"] == "Mug"
    assert RewardRedemption.objects.filter(member=rich_member, reward=mug).count() == 1


def test_unlimited_stock_stays_unlimited(rich_member, brand):
    voucher = factories.reward(brand, points_cost=100, stock=None)

    redeem_reward(rich_member, voucher)
    redeem_reward(rich_member, voucher)

    assert stock(voucher) is None
    assert selectors.member_balance(member=rich_member).balance == 800


def test_replay_redeems_once(rich_member, brand):
    mug = factories.reward(brand, points_cost=300, stock=2)

    first = redeem_reward(rich_member, mug, idempotency_key="app-1")
    retry = redeem_reward(rich_member, mug, idempotency_key="app-1")

    assert retry.pk == first.pk
    assert stock(mug) == 1
    assert selectors.member_balance(member=rich_member).balance == 700


def test_out_of_stock_is_refused_and_nothing_written(rich_member, brand):
    # Given the last mug went to someone else
    mug = factories.reward(brand, points_cost=300, stock=1)
    someone = factories.member()
    factories.earn(someone, brand, 300)
    redeem_reward(someone, mug)
    assert stock(mug) == 0

    # When the member tries to redeem it
    error = factories.assert_refused_all(
        ErrorCode.INVALID_STATE, lambda: redeem_reward(rich_member, mug), field="rewardId"
    )

    # Then they are told it is out of stock, and keep their points
    assert "out of stock" in error.message
    assert selectors.member_balance(member=rich_member).balance == 1000


def test_not_enough_points_leaves_the_stock_untouched(member, brand):
    # Given a member with 100 points and a 300-point reward in stock
    factories.earn(member, brand, 100)
    mug = factories.reward(brand, points_cost=300, stock=3)

    # When they try to redeem it, the burn is refused and the stock is not taken
    factories.assert_refused_all(ErrorCode.INSUFFICIENT_POINTS, lambda: redeem_reward(member, mug))
    assert stock(mug) == 3


@pytest.mark.parametrize(
    "unavailable",
    [
        {"active": False},
        {"ends_at": timezone.now() - timedelta(days=1)},
        {"starts_at": timezone.now() + timedelta(days=1)},
    ],
    ids=["inactive", "expired", "not-yet-started"],
)
def test_inactive_expired_or_future_reward_is_refused(rich_member, brand, unavailable):
    reward = factories.reward(brand, points_cost=100, stock=5, **unavailable)

    factories.assert_refused_all(
        ErrorCode.INVALID_STATE, lambda: redeem_reward(rich_member, reward), field="rewardId"
    )

    assert stock(reward) == 5
    assert reward not in partner_selectors.rewards_available(partner=brand)


def test_unknown_reward_is_not_found(rich_member):
    factories.assert_refused_all(
        ErrorCode.NOT_FOUND,
        lambda: services.reward_redeem(member=rich_member, reward_id=999_999, idempotency_key="k"),
        field="rewardId",
    )


def test_catalogue_lists_only_what_can_be_redeemed_now(brand, other_partner):
    # Given rewards in every state, and one at a suspended partner
    on_offer = factories.reward(brand, name="On offer", points_cost=100, stock=1)
    cheap = factories.reward(brand, name="Cheap", points_cost=50)
    factories.reward(brand, name="Gone", points_cost=100, stock=0)
    factories.reward(brand, name="Off", points_cost=100, active=False)
    services.partner_set_status(partner=other_partner, status="suspended")
    factories.reward(other_partner, name="Suspended", points_cost=100)

    # Then the catalogue shows what a member can take, cheapest first
    assert list(partner_selectors.rewards_available()) == [cheap, on_offer]


def test_a_reward_cheaper_than_the_minimum_redemption_can_still_be_redeemed(
    programme, member, partner
):
    # Given a programme whose tills must redeem at least 100 points, and a 50-point reward
    from partners.models import Reward
    from partners.services import reward_redeem
    from tests import factories as f

    programme.min_redemption_points = 100
    programme.save()
    f.earn(member, partner, 80)
    reward = Reward.objects.create(partner=partner, name="Sticker", points_cost=50, stock=3)

    # When the member redeems it
    redemption = reward_redeem(member=member, reward_id=reward.pk, idempotency_key="r-1")

    # Then the reward's own price applies, not the till minimum
    assert redemption.transaction.member_points == -50
    reward.refresh_from_db()
    assert reward.stock == 2


def test_an_admin_edit_keeps_the_redemptions_made_while_the_form_was_open(
    admin_client, rich_member, brand
):
    # Given 5 mugs, and an operator who opens the reward's form
    mug = factories.reward(brand, name="Mug", points_cost=100, stock=5)
    url = f"/admin/partners/reward/{mug.pk}/change/"
    form = admin_client.get(url).context["adminform"].form
    data = {name: form[name].value() or "" for name in form.fields}
    assert data["stock"] == data["stock_shown"] == 5

    # When two members redeem one each while the form is open
    redeem_reward(rich_member, mug)
    redeem_reward(rich_member, mug)

    # Then saving a new description leaves the stock at 3, not the 5 the form showed
    admin_client.post(url, {**data, "description": "Blue"})
    assert (Reward.objects.get(pk=mug.pk).description, stock(mug)) == ("Blue", 3)
    # And restocking by 10 on a form that showed 3 adds 10 to what there is then
    redeem_reward(rich_member, mug)
    admin_client.post(url, {**data, "description": "Blue", "stock": 13, "stock_shown": 3})
    assert stock(mug) == 12
