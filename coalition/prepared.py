"""Server-side prepared statements for the ledger's hot statements (PostgreSQL).

psycopg2 sends every statement as text, so PostgreSQL parses, analyses and plans the
one-statement earn (posting._CREDIT_SQL: five data-modifying CTEs) on every call; planning
alone took about 0.35 ms of an earn's 1.7 ms. A `Prepared` statement is sent once per
database connection as `PREPARE name (types) AS ...` and then run as `EXECUTE name (...)`:
after five executions PostgreSQL keeps a generic plan and stops planning. Measured on this
machine (bench/ledger.py's earn floor): 720 -> 1,100 earns/s in one process.

Prepared statements live in the server session. Behind a pooler that hands each transaction
to whichever server connection is free (PgBouncer in transaction pooling mode), the EXECUTE
may reach a connection that never saw the PREPARE: set COALITION_PREPARED_STATEMENTS=false
there (docs/scaling.md) and the same SQL is sent as plain text. SQLite never prepares.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings

_PARAMETER = re.compile(r"%\((\w+)\)s")


def prepared_statements_enabled(connection) -> bool:
    return connection.vendor == "postgresql" and settings.COALITION.get("PREPARED_STATEMENTS", True)


class Prepared:
    """One SQL statement with pyformat parameters (`%(name)s`), prepared on first use on each
    connection. `types` gives each parameter's PostgreSQL type (the PREPARE needs them: a
    parameter used only in `IS NULL` has no type otherwise)."""

    def __init__(self, name: str, sql: str, types: dict[str, str]):
        self.name = name
        self.sql = sql
        order: list[str] = []

        def number(match: re.Match) -> str:
            if match.group(1) not in order:
                order.append(match.group(1))
            return f"${order.index(match.group(1)) + 1}"

        body = _PARAMETER.sub(number, sql)
        if "%" in body:
            raise ValueError(f"{name}: only %(name)s parameters can be prepared")
        untyped = [parameter for parameter in order if parameter not in types]
        if untyped:
            raise ValueError(f"{name}: no type for {', '.join(untyped)}")
        self.parameters = order
        self.prepare_sql = f"PREPARE {name} ({', '.join(types[p] for p in order)}) AS {body}"
        self.execute_sql = f"EXECUTE {name} ({', '.join(['%s'] * len(order))})"

    def arguments(self, params: dict[str, Any]) -> list[Any]:
        return [params[parameter] for parameter in self.parameters]

    def execute(self, cursor, params: dict[str, Any]) -> None:
        """Run the statement on a Django cursor: prepared where enabled, else as text."""
        db = cursor.db
        if not prepared_statements_enabled(db):
            cursor.execute(self.sql, params)
            return
        self.run(cursor, params, prepared=_prepared_on(db))

    def run(self, cursor, params: dict[str, Any], *, prepared: set[str]) -> None:
        """PREPARE unless `prepared` (the names prepared on the cursor's connection) has it,
        then EXECUTE. Any DB-API cursor on PostgreSQL: the benchmarks' raw psycopg2 ones too."""
        if self.name not in prepared:
            # No parameters: psycopg2 then sends the text as it is (its $n stay for the server).
            cursor.execute(self.prepare_sql)
            prepared.add(self.name)  # a PREPARE outlives a rollback of its transaction
        cursor.execute(self.execute_sql, self.arguments(params))


def _prepared_on(db) -> set[str]:
    """The statements prepared on `db`'s current server connection (a new connection, after
    a close or a lost connection, starts with none)."""
    raw = db.connection
    state = getattr(db, "_coalition_prepared", None)
    if state is None or state[0] is not raw:
        state = (raw, set())
        db._coalition_prepared = state
    return state[1]
