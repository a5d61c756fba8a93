"""The ledger's hot statements as server-side prepared statements (coalition/prepared.py):
prepared once per server connection, again after a reconnect, never when turned off."""

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import override_settings

from coalition.models import LedgerTransaction
from coalition.prepared import Prepared
from coalition.services.posting import CREDIT
from tests import factories


def prepared_names() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements")
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_earn_prepares_its_statement_once_per_connection_and_again_after_a_reconnect(
    member, partner
):
    # Given a fresh server connection
    connection.close()
    connection.ensure_connection()
    assert CREDIT.name not in prepared_names()

    # When the member earns three times
    for points in (10, 20, 30):
        factories.earn(member, partner, points)

    # Then the credit statement was prepared once on this connection and every earn posted
    assert CREDIT.name in prepared_names()
    assert factories.wallet(member).balance == 60

    # And after the connection is lost and opened again, the next earn prepares it anew
    connection.close()
    factories.earn(member, partner, 5)
    assert CREDIT.name in prepared_names()
    assert factories.wallet(member).balance == 65


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_statement_prepared_in_a_rolled_back_transaction_still_runs(member, partner):
    # Given an earn whose database transaction rolled back after the statement was prepared
    connection.close()
    with pytest.raises(RuntimeError, match="undo"):
        with transaction.atomic():
            factories.earn(member, partner, 10)
            raise RuntimeError("undo")
    assert factories.wallet(member).balance == 0

    # When the member earns again on the same connection
    factories.earn(member, partner, 7)

    # Then it posted (the PREPARE outlived the rollback) and only it is in the ledger
    assert factories.wallet(member).balance == 7
    assert LedgerTransaction.objects.filter(member=member).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_with_prepared_statements_off_nothing_is_prepared(member, partner):
    # Given prepared statements turned off (PgBouncer in transaction pooling mode)
    connection.close()
    with override_settings(COALITION={**settings.COALITION, "PREPARED_STATEMENTS": False}):
        # When the member earns
        factories.earn(member, partner, 10)

        # Then it posted as plain SQL and no statement was prepared on the server
        assert factories.wallet(member).balance == 10
        assert prepared_names() == set()


def test_a_statement_needs_a_type_for_every_parameter_and_pyformat_only():
    with pytest.raises(ValueError, match="no type for member"):
        Prepared("x", "SELECT %(member)s, %(key)s", {"key": "text"})
    with pytest.raises(ValueError, match="only %\\(name\\)s parameters"):
        Prepared("x", "SELECT %s", {})
    statement = Prepared("x", "SELECT %(a)s + %(b)s - %(a)s", {"a": "int", "b": "int"})
    assert statement.prepare_sql == "PREPARE x (int, int) AS SELECT $1 + $2 - $1"
    assert statement.execute_sql == "EXECUTE x (%s, %s)"
    assert statement.arguments({"b": 2, "a": 1}) == [1, 2]
