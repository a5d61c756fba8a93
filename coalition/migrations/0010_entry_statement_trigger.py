"""PostgreSQL: one statement-level trigger on entries (balance, references, wallets, spend
guard) instead of two (coalition/sql/postgresql_entry_statement_trigger.sql)."""

from django.db import migrations

from coalition.migration_sql import sql_file


class Migration(migrations.Migration):
    dependencies = [("coalition", "0009_entry_references_by_trigger")]

    operations = [
        migrations.RunPython(
            sql_file("postgresql", "entry_statement_trigger"),
            sql_file("postgresql", "entry_statement_trigger_reverse"),
        ),
    ]
