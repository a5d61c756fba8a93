"""The ledger's SQL files (coalition/sql/<vendor>_<name>.sql) as migration steps."""

from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent / "sql"


def sql_file(vendor: str, name: str):
    """A RunPython function running coalition/sql/<vendor>_<name>.sql on that database
    vendor only (nothing elsewhere)."""

    def apply(apps, schema_editor):
        connection = schema_editor.connection
        if connection.vendor != vendor:
            return
        sql = (SQL_DIR / f"{vendor}_{name}.sql").read_text()
        if vendor == "sqlite":
            connection.connection.executescript(sql)
        else:
            # No parameters: the '%' placeholders of RAISE must reach the server untouched.
            with connection.cursor() as cursor:
                cursor.execute(sql)

    return apply


def noop(apps, schema_editor):
    """For a step with nothing to undo."""
