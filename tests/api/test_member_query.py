"""member(memberNumber): a partner (read scope) or staff looks a member up by number; a
partner sees only its own part of the member's history, and none of its donations."""

import pytest

from tests import factories
from tests.api.conftest import CALLERS, key_for, staff_token_for

MEMBER = """query Member($number: String!) { member(memberNumber: $number) {
  memberNumber displayName balance heldPoints
  transactions(first: 10) { totalCount edges { node { kind points partner { code } } } }
  donations(first: 5) { totalCount }
} }"""


@pytest.fixture
def history(brand, other_brand, shopper, charity):
    """The shopper earned 1,000 at brand; redeems 100 at other_brand; gives 100 to charity."""
    factories.burn(shopper, other_brand.partner, 100)
    factories.give(shopper, charity, 100)


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
def test_permission_matrix(api, callers, caller, shopper, history, brand, other_brand):
    response = api(MEMBER, {"number": shopper.member_number}, token=callers[caller])

    if caller in ("anonymous", "member", "other_member"):
        assert response.data == {"member": None}
        assert response.codes == ["PERMISSION_DENIED"]
        return
    member = response.data["member"]
    assert member["memberNumber"] == shopper.member_number
    assert member["balance"] == 800
    kinds = [(e["node"]["kind"], e["node"]["partner"]) for e in member["transactions"]["edges"]]
    if caller == "partner":
        assert kinds == [("EARN", {"code": brand.partner.code})]
        assert member["donations"]["totalCount"] == 0
    elif caller == "other_partner":
        assert kinds == [("BURN", {"code": other_brand.partner.code})]
        assert member["donations"]["totalCount"] == 0
    else:  # staff
        assert [kind for kind, _ in kinds] == ["DONATE", "BURN", "EARN"]
        assert member["donations"]["totalCount"] == 1


@pytest.mark.django_db
def test_an_unknown_number_is_null(api, brand):
    for number in ["6337000000000000", "abc", ""]:
        response = api(MEMBER, {"number": number}, token=brand.key)
        assert response.data == {"member": None}
        assert response.errors == []


@pytest.mark.django_db
def test_a_key_without_the_read_scope_is_refused(api, brand, shopper):
    key = key_for(brand.partner, ("earn", "burn"))

    response = api(MEMBER, {"number": shopper.member_number}, token=key)

    assert response.codes == ["PERMISSION_DENIED"]
    assert "read scope" in response.errors[0]["message"]


@pytest.mark.django_db
def test_staff_without_the_member_permission_are_refused(api, shopper, django_user_model):
    clerk = django_user_model.objects.create_user(username="clerk", is_staff=True)
    token = staff_token_for(clerk, finance=False)

    response = api(MEMBER, {"number": shopper.member_number}, token=token)

    assert response.codes == ["PERMISSION_DENIED"]
