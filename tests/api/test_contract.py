"""The served schema honours the contract, and schema.graphql at the root is current."""

import io
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

CONTRACT_TOOL = Path(settings.BASE_DIR).parent / "shared" / "tools" / "check_contract.py"
COMMITTED = Path(settings.BASE_DIR) / "schema.graphql"


@pytest.fixture(scope="module")
def printed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("schema") / "schema.graphql"
    call_command("graphql_schema", schema="api.schema.schema", out=str(out), stdout=io.StringIO())
    return out


def test_the_committed_schema_is_the_printed_one(printed):
    assert COMMITTED.read_text() == printed.read_text(), (
        "schema.graphql is stale: python manage.py graphql_schema --schema api.schema.schema "
        "--out schema.graphql"
    )


@pytest.mark.skipif(not CONTRACT_TOOL.exists(), reason="the shared contract tool is not here")
def test_the_schema_honours_the_contract(printed):
    result = subprocess.run(
        [sys.executable, str(CONTRACT_TOOL), str(printed)], capture_output=True, text=True
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(", 0 breached")


def test_every_operation_declares_who_may_call_it():
    from api.schema import Mutation, Query

    for name in Query._meta.fields:
        resolver = getattr(Query, f"resolve_{name}", None)
        assert getattr(resolver, "permission", None) is not None, f"Query.{name}"
    for name, field in Mutation._meta.fields.items():
        mutation = field.resolver.__self__
        assert getattr(mutation, "permission", None) is not None, f"Mutation.{name}"
