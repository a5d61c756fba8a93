-- Statement-level balance check on PostgreSQL (reverse: postgresql_statement_balance_reverse.sql).
--
-- Replaces the two row-level deferred constraint triggers of postgresql_ledger_rules.sql
-- (one check per entry and one per transaction, each summing the transaction's entries at
-- commit: three index scans per two-leg posting) with:
--
-- 1. one trigger per INSERT statement on coalition_entry that reads the inserted rows from a
--    transition table and checks, in one query, that every transaction they belong to now
--    has at least two entries summing to zero. Immediate, not at commit: a transaction's
--    entries are written in one statement (the services' single INSERT, the batch's COPY);
--    entries added later to a transaction are checked together with the ones it had.
-- 2. the deferred per-transaction trigger kept, but reduced to "has entries at all" (an index
--    probe that stops at the first row): entries that exist were checked by 1, so a
--    transaction with any entries balances; one without any is refused at commit.
--
-- The rule is unchanged: at commit every transaction has >= 2 entries summing to zero.
-- What is refused earlier now: a statement that leaves a transaction unbalanced, even if a
-- later statement in the same database transaction would have balanced it.

CREATE OR REPLACE FUNCTION coalition_check_balanced_statement() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    -- LATERAL: one index probe per transaction (a transition table has no statistics, and a
    -- plain IN (...) lets the planner pick a scan of the whole entry table).
    SELECT touched.txn_id, sums.legs, sums.total
      INTO bad
      FROM (SELECT DISTINCT transaction_id AS txn_id FROM new_entries) AS touched
     CROSS JOIN LATERAL (
            SELECT count(*) AS legs, coalesce(sum(e.points), 0) AS total
              FROM coalition_entry AS e
             WHERE e.transaction_id = touched.txn_id
           ) AS sums
     WHERE sums.legs < 2 OR sums.total <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'coalition ledger: transaction % does not balance (% entries, sum %)',
            bad.txn_id, bad.legs, bad.total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION coalition_check_has_entries() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM coalition_entry WHERE transaction_id = NEW.id LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'coalition ledger: transaction % does not balance (0 entries, sum 0)',
            NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS coalition_entry_balanced ON coalition_entry;
DROP TRIGGER IF EXISTS coalition_transaction_balanced ON coalition_transaction;

CREATE TRIGGER coalition_entry_balanced
    AFTER INSERT ON coalition_entry
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION coalition_check_balanced_statement();

CREATE CONSTRAINT TRIGGER coalition_transaction_balanced
    AFTER INSERT ON coalition_transaction
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION coalition_check_has_entries();
