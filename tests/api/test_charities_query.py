"""charities: verified charities members can give to, public, paginated."""

import pytest

from charity.models import Charity
from tests import factories
from tests.api.conftest import CALLERS, gid

CHARITIES = """query Charities($first: Int, $after: String) {
  charities(first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node { id name registrationNumber cause totalDonatedPoints } }
  }
}"""


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
def test_anyone_lists_verified_charities_with_their_totals(api, callers, caller, shopper):
    listed = factories.CharityFactory(name="Alpha")
    factories.CharityFactory(name="Beta", status=Charity.Status.PENDING)
    factories.give(shopper, listed, 150)

    response = api(CHARITIES, token=callers[caller])

    assert response.errors == []
    connection = response.data["charities"]
    assert connection["totalCount"] == 1
    assert [edge["node"] for edge in connection["edges"]] == [
        {
            "id": gid("Charity", listed.pk),
            "name": "Alpha",
            "registrationNumber": listed.registration_number,
            "cause": listed.cause,
            "totalDonatedPoints": 150,
        }
    ]


@pytest.mark.django_db
def test_pages_follow_each_other(api, db):
    for name in ["Delta", "Alpha", "Charlie", "Bravo", "Echo"]:
        factories.CharityFactory(name=name)

    names, after = [], None
    while True:
        page = api(CHARITIES, {"first": 2, "after": after}).data["charities"]
        names += [edge["node"]["name"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]

    assert names == ["Alpha", "Bravo", "Charlie", "Delta", "Echo"]
