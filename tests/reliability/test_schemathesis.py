"""Schemathesis in its GraphQL mode against a live server (issue 9): every query and mutation
of the schema, generated from the schema itself, sent with every kind of credential. No
answer is a 500 or an INTERNAL_ERROR, and the ledger proves its invariants afterwards.

Bounded: a few examples per operation and credential (`MAX_EXAMPLES`), well under a minute.
"""

from __future__ import annotations

from datetime import UTC

import pytest
import requests
import schemathesis
from graphql import introspection_from_schema
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.graphql import nodes

from api.schema import schema as api_schema
from coalition.selectors import ledger_check
from tests import factories
from tests.api.conftest import key_for, member_with_password, staff_token_for, token_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

MAX_EXAMPLES = 10  # per operation, spread over the credentials

# The project's custom scalars: well-formed values and the edges (huge, too precise, junk).
_decimals = st.one_of(
    st.decimals(min_value=-(10**6), max_value=10**6, places=2, allow_nan=False).map(str),
    st.sampled_from(["0", "1e400", "-1", "0.0000001", "NaN", "Infinity", "12,5", "", "9" * 40]),
)
_datetimes = st.one_of(
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    st.sampled_from(["2025-02-30T00:00:00Z", "yesterday", "", "9999-12-31T23:59:59+14:00"]),
)
schemathesis.graphql.scalar("Decimal", _decimals.map(nodes.String))
schemathesis.graphql.scalar("DateTime", _datetimes.map(nodes.String))

SCHEMA = schemathesis.graphql.from_dict(introspection_from_schema(api_schema.graphql_schema))
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
CREDENTIALS = ["anonymous", "member", "partner", "staff"]


@pytest.fixture
def live_server_connections_closed():
    """The live server answers each request in a thread of its own: make those threads close
    their connections (CONN_MAX_AGE 0), and end any left at the end, so the test database
    can be dropped."""
    from django.db import connection, connections

    shared = connections.settings["default"]
    saved = shared.get("CONN_MAX_AGE")
    shared["CONN_MAX_AGE"] = 0
    yield
    shared["CONN_MAX_AGE"] = saved
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def credentials(programme, staff_user, live_server_connections_closed):
    partner, _key = factories.onboarded_partner()
    member = member_with_password()
    factories.earn(member, partner, 500)
    return {
        "anonymous": {},
        "member": {"Authorization": f"Bearer {token_for(member)}"},
        "partner": {"Authorization": f"Bearer {key_for(partner)}"},
        "staff": {"Authorization": f"Bearer {staff_token_for(staff_user)}"},
    }


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_no_operation_answers_500_to_any_caller(live_server, credentials, operation, settings):
    settings.RATE_LIMITS = {"default": "100000/m", "memberLogin": "100000/m"}
    url = live_server.url + "/graphql/"
    session = requests.Session()
    failures: list[str] = []

    @settings_for_fuzzing
    @given(case=operation.as_strategy(), credential=st.sampled_from(CREDENTIALS))
    def fuzz(case, credential):
        response = case.call(base_url=url, session=session, headers=credentials[credential])
        body = response.text
        if response.status_code >= 500 or "INTERNAL_ERROR" in body:
            failures.append(f"{credential}: {response.status_code} {case.body!r} → {body[:300]}")

    fuzz()

    assert failures == []
    report = ledger_check()
    assert report.ok, report.problems


settings_for_fuzzing = hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
