-- Back to foreign keys alone (the migration's field changes put them back): drop the
-- reference checks, keep the statement-level balance check of postgresql_statement_balance.sql.

DROP TRIGGER IF EXISTS coalition_member_keeps_lots ON coalition_member;
DROP TRIGGER IF EXISTS coalition_account_keeps_entries ON coalition_account;
DROP FUNCTION IF EXISTS coalition_refuse_referenced_delete();
DROP TRIGGER IF EXISTS coalition_lot_references ON coalition_lot;
DROP FUNCTION IF EXISTS coalition_check_lot_references();

-- The balance check as postgresql_statement_balance.sql wrote it (no reference checks).
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

