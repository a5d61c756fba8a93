"""me: the member of the member token, and nobody else."""

from datetime import timedelta

import pytest
from django.utils import timezone

from coalition.models import Tier
from tests import factories
from tests.api.conftest import CALLERS, token_for

ME = """{ me {
  id memberNumber displayName status balance heldPoints walletBalance lifetimeEarned
  tier { code name earnMultiplier qualifyingPoints }
  expiringPoints(withinDays: 30) { points expiresAt }
  transactions(first: 10) { totalCount edges { node { kind points partner { code } } } }
  donations(first: 10) { totalCount edges { node { points receiptNumber charity { name } } } }
} }"""


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
def test_only_a_member_token_has_a_me(api, callers, caller, shopper, other_member):
    response = api(ME, token=callers[caller])

    if caller == "member":
        assert response.data["me"]["memberNumber"] == shopper.member_number
    elif caller == "other_member":
        assert response.data["me"]["memberNumber"] == other_member.member_number
        assert response.data["me"]["transactions"]["totalCount"] == 0
    else:
        assert response.status == 200
        assert response.data == {"me": None}
        assert response.codes == ["PERMISSION_DENIED"]


@pytest.mark.django_db
def test_the_member_sees_its_whole_history_and_balances(api, brand, other_brand, shopper, charity):
    factories.burn(shopper, other_brand.partner, 100)
    factories.hold(shopper, other_brand.partner, 50)
    factories.give(shopper, charity, 100)

    me = api(ME, token=token_for(shopper)).data["me"]

    assert me["balance"] == 750
    assert me["heldPoints"] == 50
    assert me["walletBalance"] == 800
    assert me["lifetimeEarned"] == 1000
    kinds = [edge["node"]["kind"] for edge in me["transactions"]["edges"]]
    assert kinds == ["DONATE", "BURN", "EARN"]
    assert me["donations"]["totalCount"] == 1
    assert me["donations"]["edges"][0]["node"]["charity"] == {"name": charity.name}
    assert me["donations"]["edges"][0]["node"]["receiptNumber"].startswith("CR-")


@pytest.mark.django_db
def test_lifetime_earned_counts_reversals_of_earns(api, brand, shopper):
    earn = shopper.transactions.get(kind="earn")
    factories.reverse(earn, 300)
    factories.burn(shopper, brand.partner, 100)

    me = api(ME, token=token_for(shopper)).data["me"]

    assert me["lifetimeEarned"] == 700


@pytest.mark.django_db
def test_tier_is_the_members_tier(api, brand, shopper):
    Tier.objects.create(code="BLUE", name="Blue", qualifying_points=0)
    Tier.objects.create(code="GOLD", name="Gold", qualifying_points=500, earn_multiplier="1.5")
    factories.earn(shopper, brand.partner, 10)  # crosses the threshold: upgrade

    tier = api(ME, token=token_for(shopper)).data["me"]["tier"]

    assert tier == {
        "code": "GOLD",
        "name": "Gold",
        "earnMultiplier": "1.500",
        "qualifyingPoints": 500,
    }


@pytest.mark.django_db
def test_points_about_to_expire(api, brand, shopper):
    from coalition.models import PointLot

    PointLot.objects.filter(member=shopper).update(expires_at=timezone.now() + timedelta(days=3))

    me = api(ME, token=token_for(shopper)).data["me"]

    assert [row["points"] for row in me["expiringPoints"]] == [1000]


@pytest.mark.django_db
def test_a_negative_window_is_invalid(api, shopper):
    response = api("{ me { expiringPoints(withinDays: -1) { points } } }", token=token_for(shopper))

    assert response.codes == ["INVALID"]
