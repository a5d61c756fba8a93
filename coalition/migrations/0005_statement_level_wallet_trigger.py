"""PostgreSQL: post entries to member wallets once per INSERT statement instead of once per
row (coalition/sql/postgresql_statement_wallet.sql). SQLite keeps its row-level triggers."""

from pathlib import Path

from django.db import migrations

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


def _run(name):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        sql = (SQL_DIR / f"postgresql_{name}.sql").read_text()
        # No parameters: the '%' placeholders of RAISE must reach the server untouched.
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(sql)

    return apply


class Migration(migrations.Migration):
    dependencies = [("coalition", "0004_outbox_audit")]

    operations = [
        migrations.RunPython(_run("statement_wallet"), _run("statement_wallet_reverse")),
    ]
