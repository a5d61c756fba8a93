"""Database-enforced ledger rules, kept as SQL files beside the app (coalition/sql/)."""

from pathlib import Path

from django.db import migrations

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


def _run(name):
    def apply(apps, schema_editor):
        path = SQL_DIR / f"{schema_editor.connection.vendor}_{name}.sql"
        if not path.exists():
            raise RuntimeError(f"no ledger rules for database {schema_editor.connection.vendor}")
        sql = path.read_text()
        if schema_editor.connection.vendor == "sqlite":
            schema_editor.connection.connection.executescript(sql)
        else:
            # No parameters: the '%' placeholders of RAISE must reach the server untouched.
            with schema_editor.connection.cursor() as cursor:
                cursor.execute(sql)

    return apply


class Migration(migrations.Migration):
    dependencies = [("coalition", "0001_initial")]

    operations = [
        migrations.RunPython(_run("ledger_rules"), _run("ledger_rules_reverse")),
    ]
