"""`__any` (coalition/lookups.py): membership in a list sent as one array parameter on
PostgreSQL, IN (...) elsewhere — the same rows as `__in` either way."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from coalition.models import Account, Member
from tests import factories


@pytest.mark.django_db
def test_any_finds_the_same_rows_as_in_for_ids_strings_and_relations():
    # Given five members with wallets
    members = [factories.member() for _ in range(5)]
    chosen = [members[0].pk, members[2].pk, members[4].pk]
    numbers = [members[1].member_number, members[3].member_number]

    # When they are looked up with __any by id, by a string column, and through a relation
    by_id = set(Member.objects.filter(pk__any=chosen).values_list("pk", flat=True))
    by_number = set(Member.objects.filter(member_number__any=numbers).values_list("pk", flat=True))
    wallets = set(Account.objects.filter(member__any=chosen).values_list("member_id", flat=True))

    # Then each finds exactly what __in finds
    assert by_id == set(Member.objects.filter(pk__in=chosen).values_list("pk", flat=True))
    assert by_id == set(chosen) == wallets
    assert by_number == {members[1].pk, members[3].pk}


@pytest.mark.django_db
def test_any_of_an_empty_list_or_only_none_matches_nothing():
    factories.member()
    assert not Member.objects.filter(pk__any=[]).exists()
    assert not Member.objects.filter(pk__any=[None]).exists()


@pytest.mark.postgres
@pytest.mark.django_db
def test_on_postgresql_the_list_is_one_array_parameter():
    members = [factories.member() for _ in range(3)]
    with CaptureQueriesContext(connection) as queries:
        list(Member.objects.filter(pk__any=[m.pk for m in members]))
    assert "= ANY(" in queries.captured_queries[-1]["sql"]
    assert " IN (" not in queries.captured_queries[-1]["sql"]


@pytest.mark.django_db
def test_any_matches_strings_with_quotes_backslashes_commas_braces_and_null_exactly():
    # Given members whose names hold every character an array literal treats specially
    names = ['say "hi"', "back\\slash", "NULL", "a,b", "{braces}", "ünïcode €", "", " pad "]
    members = {name: factories.member() for name in [*names, "null"]}  # "null": a near miss
    for name, member in members.items():
        Member.objects.filter(pk=member.pk).update(display_name=name)
    near_miss = members.pop("null")

    # When they are looked up by name with __any
    found = set(Member.objects.filter(display_name__any=names).values_list("pk", flat=True))

    # Then exactly those members are found, each by its own name
    assert found == {member.pk for member in members.values()}
    assert near_miss.pk not in found
    for name, member in members.items():
        assert list(
            Member.objects.filter(display_name__any=[name]).values_list("pk", flat=True)
        ) == [member.pk]
