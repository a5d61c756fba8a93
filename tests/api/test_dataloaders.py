"""Request-scoped batching: a page of history costs one query per related table, whatever
the page size."""

import pytest

from tests import factories
from tests.api.conftest import token_for

HISTORY = """query($n: Int) { me { transactions(first: $n) { edges { node {
  kind partner { name } charity { name } reversalOf { id }
} } } } }"""


@pytest.fixture
def busy_member(programme, brand, other_brand, charity):
    """100 transactions of every kind, at three partners and two charities."""
    third, _key = factories.onboarded_partner()
    second_charity = factories.CharityFactory()
    member = factories.member()
    partners = [brand.partner, other_brand.partner, third]
    earns = [factories.earn(member, partners[i % 3], 100) for i in range(40)]
    burns = [factories.burn(member, partners[i % 3], 10) for i in range(25)]
    for i in range(15):
        factories.donate(member, [charity, second_charity][i % 2], 10)
    for i in range(10):
        factories.reverse(earns[i], 5)
    for i in range(10):
        factories.reverse(burns[i], 5)
    assert member.transactions.count() == 100
    return member


@pytest.mark.django_db
def test_a_page_of_history_is_five_queries(api, busy_member, django_assert_max_num_queries):
    token = token_for(busy_member)

    for page_size in (100, 10):
        with django_assert_max_num_queries(5):
            response = api(HISTORY, {"n": page_size}, token=token)
        assert len(response.data["me"]["transactions"]["edges"]) == page_size

    edges = api(HISTORY, {"n": 100}, token=token).data["me"]["transactions"]["edges"]
    assert {edge["node"]["kind"] for edge in edges} == {"EARN", "BURN", "DONATE", "REVERSAL"}
    assert all(edge["node"]["partner"] or edge["node"]["charity"] for edge in edges)
    assert sum(1 for edge in edges if edge["node"]["reversalOf"]) == 20


@pytest.mark.django_db
def test_a_partner_page_is_batched_too(api, brand, busy_member, django_assert_max_num_queries):
    query = """query($number: String!) { member(memberNumber: $number) {
      transactions(first: 100) { edges { node { partner { name } reversalOf { id } } } } } }"""

    with django_assert_max_num_queries(5):
        response = api(query, {"number": busy_member.member_number}, token=brand.key)

    edges = response.data["member"]["transactions"]["edges"]
    assert {e["node"]["partner"]["name"] for e in edges} == {brand.partner.name}
