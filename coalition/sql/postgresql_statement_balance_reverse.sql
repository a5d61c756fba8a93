-- Back to the row-level deferred balance checks of postgresql_ledger_rules.sql.

DROP TRIGGER IF EXISTS coalition_entry_balanced ON coalition_entry;
DROP TRIGGER IF EXISTS coalition_transaction_balanced ON coalition_transaction;

CREATE CONSTRAINT TRIGGER coalition_entry_balanced
    AFTER INSERT ON coalition_entry
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION coalition_check_balanced();

CREATE CONSTRAINT TRIGGER coalition_transaction_balanced
    AFTER INSERT ON coalition_transaction
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION coalition_check_balanced();

DROP FUNCTION IF EXISTS coalition_check_balanced_statement();
DROP FUNCTION IF EXISTS coalition_check_has_entries();
