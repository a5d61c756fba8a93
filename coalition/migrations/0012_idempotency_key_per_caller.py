"""An idempotency key is unique per caller across transactions, holds and recorded writes
(coalition/sql/postgresql_idempotency_per_caller.sql says how, and what it leaves out)."""

from django.db import migrations

from coalition.migration_sql import sql_file


class Migration(migrations.Migration):
    dependencies = [("coalition", "0011_transaction_references_by_trigger")]

    operations = [
        migrations.RunPython(
            sql_file("postgresql", "idempotency_per_caller"),
            sql_file("postgresql", "idempotency_per_caller_reverse"),
        ),
        migrations.RunPython(
            sql_file("sqlite", "idempotency_per_caller"),
            sql_file("sqlite", "idempotency_per_caller_reverse"),
        ),
    ]
