"""node(id): any object by global id, with exactly the visibility of the other fields.
What a caller may not see is null, like what does not exist: nothing leaks."""

import pytest

from tests import factories
from tests.api.conftest import CALLERS, gid

NODE = """query Node($id: ID!) { node(id: $id) {
  id __typename
  ... on PointsTransaction { points }
  ... on Member { memberNumber }
  ... on RedemptionHold { points }
  ... on Partner { code }
  ... on Charity { name }
  ... on Donation { points }
} }"""


@pytest.fixture
def objects(brand, other_brand, shopper, charity):
    earn = shopper.transactions.get(kind="earn")
    burn = factories.burn(shopper, other_brand.partner, 100)
    hold = factories.hold(shopper, brand.partner, 50)
    donation = factories.give(shopper, charity, 100)
    return {
        "earn": gid("PointsTransaction", earn.pk),
        "burn_elsewhere": gid("PointsTransaction", burn.pk),
        "member": gid("Member", shopper.pk),
        "hold": gid("RedemptionHold", hold.pk),
        "partner": gid("Partner", brand.partner.pk),
        "charity": gid("Charity", charity.pk),
        "donation": gid("Donation", donation.pk),
    }


# Who sees each object (by caller).
VISIBLE = {
    "earn": {"member", "partner", "staff"},
    "burn_elsewhere": {"member", "other_partner", "staff"},
    "member": {"member", "staff"},  # partners reach members by member number only
    "hold": {"member", "partner", "staff"},
    "partner": set(CALLERS),
    "charity": set(CALLERS),
    "donation": {"member", "staff"},
}


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("name", sorted(VISIBLE))
def test_visibility(api, callers, objects, caller, name):
    response = api(NODE, {"id": objects[name]}, token=callers[caller])

    assert response.errors == []
    if caller in VISIBLE[name]:
        assert response.data["node"]["id"] == objects[name]
    else:
        assert response.data == {"node": None}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "node_id",
    [
        "",
        "garbage",
        gid("PointsTransaction", 999999),
        gid("Nope", 1),
        gid("Tier", 1),
        gid("PointsTransaction", "x"),
        gid("Member", "-1"),
    ],
)
def test_unknown_ids_are_null(api, callers, node_id):
    response = api(NODE, {"id": node_id}, token=callers["staff"])

    assert response.errors == []
    assert response.data == {"node": None}


@pytest.mark.django_db
def test_another_partners_transaction_looks_like_a_missing_one(api, callers, objects):
    theirs = api(NODE, {"id": objects["burn_elsewhere"]}, token=callers["partner"])
    missing = api(NODE, {"id": gid("PointsTransaction", 999999)}, token=callers["partner"])

    assert theirs.body == missing.body == {"data": {"node": None}}
