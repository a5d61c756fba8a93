"""Connections: keyset cursors that survive new rows, page-size limits, bad cursors."""

import pytest

from tests import factories
from tests.api.conftest import token_for

HISTORY = """query($first: Int, $after: String) { me { transactions(first: $first, after: $after) {
  totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  edges { cursor node { id points } } } } }"""


@pytest.fixture
def member_with_history(programme, brand):
    member = factories.member()
    for points in range(1, 8):
        factories.earn(member, brand.partner, points)
    return member


def page(api, token, first=None, after=None):
    return api(HISTORY, {"first": first, "after": after}, token=token)


@pytest.mark.django_db
def test_newest_first_and_cursors_survive_new_rows(api, brand, member_with_history):
    token = token_for(member_with_history)
    first = page(api, token, first=3).data["me"]["transactions"]
    assert [e["node"]["points"] for e in first["edges"]] == [7, 6, 5]
    assert first["totalCount"] == 7
    assert first["pageInfo"]["hasNextPage"] and not first["pageInfo"]["hasPreviousPage"]

    # New transactions arrive between the pages: an offset would now repeat 5 and 4.
    factories.earn(member_with_history, brand.partner, 100)
    factories.earn(member_with_history, brand.partner, 200)
    rest = page(api, token, first=10, after=first["pageInfo"]["endCursor"]).data["me"]
    rest = rest["transactions"]

    assert [e["node"]["points"] for e in rest["edges"]] == [4, 3, 2, 1]
    assert not rest["pageInfo"]["hasNextPage"] and rest["pageInfo"]["hasPreviousPage"]
    assert rest["totalCount"] == 9


@pytest.mark.django_db
def test_default_page_size_is_twenty(api, programme, brand):
    member = factories.member()
    for _ in range(21):
        factories.earn(member, brand.partner, 1)

    connection = page(api, token_for(member)).data["me"]["transactions"]

    assert len(connection["edges"]) == 20
    assert connection["pageInfo"]["hasNextPage"]


@pytest.mark.django_db
@pytest.mark.parametrize("first", [101, -1])
def test_page_size_out_of_range_is_invalid(api, member_with_history, first):
    response = page(api, token_for(member_with_history), first=first)

    assert response.codes == ["INVALID"]
    assert response.data == {"me": None}


@pytest.mark.django_db
def test_first_zero_is_an_empty_page(api, member_with_history):
    connection = page(api, token_for(member_with_history), first=0).data["me"]["transactions"]

    assert connection["edges"] == []
    assert connection["pageInfo"]["hasNextPage"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "cursor", ["garbage!", "WzFd", "W251bGwsbnVsbF0", "WyJub3QgYSBkYXRlIiwxXQ", "x" * 600]
)
def test_a_bad_cursor_is_invalid(api, member_with_history, cursor):
    response = page(api, token_for(member_with_history), first=2, after=cursor)

    assert response.codes == ["INVALID"]
