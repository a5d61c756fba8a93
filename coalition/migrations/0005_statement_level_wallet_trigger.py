"""PostgreSQL: post entries to member wallets once per INSERT statement instead of once per
row (coalition/sql/postgresql_statement_wallet.sql). SQLite keeps its row-level triggers."""

from django.db import migrations

from coalition.migration_sql import sql_file


class Migration(migrations.Migration):
    dependencies = [("coalition", "0004_outbox_audit")]

    operations = [
        migrations.RunPython(
            sql_file("postgresql", "statement_wallet"),
            sql_file("postgresql", "statement_wallet_reverse"),
        ),
    ]
