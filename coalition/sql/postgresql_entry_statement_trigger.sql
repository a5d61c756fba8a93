-- One statement-level trigger on coalition_entry instead of two (reverse:
-- postgresql_entry_statement_trigger_reverse.sql).
--
-- coalition_entry_balanced (balance and references, postgresql_entry_references.sql) and
-- coalition_entry_posts_to_wallet (cached wallet balances and the spend guard,
-- postgresql_statement_wallet.sql) each cost every posting a PL/pgSQL call and a pass over
-- the transition table. The same two steps, in the same order, in one function: first the
-- transactions the statement wrote to balance and everything it points at to exist, then the
-- member wallets moved and the overspend check. Messages and SQLSTATEs are unchanged.

CREATE OR REPLACE FUNCTION coalition_entries_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
    missing bigint;
    short_wallet bigint;
BEGIN
    -- 1. Every transaction the statement wrote to exists, has >= 2 entries and sums to zero
    --    (LATERAL: one index probe per transaction; a transition table has no statistics).
    SELECT touched.txn_id, sums.legs, sums.total, sums.present
      INTO bad
      FROM (SELECT DISTINCT transaction_id AS txn_id FROM new_entries) AS touched
     CROSS JOIN LATERAL (
            SELECT count(*) AS legs, coalesce(sum(e.points), 0) AS total,
                   EXISTS (SELECT 1 FROM coalition_transaction AS t
                            WHERE t.id = touched.txn_id) AS present
              FROM coalition_entry AS e
             WHERE e.transaction_id = touched.txn_id
           ) AS sums
     WHERE NOT sums.present OR sums.legs < 2 OR sums.total <> 0
     LIMIT 1;
    IF FOUND AND NOT bad.present THEN
        RAISE EXCEPTION 'coalition ledger: entries for transaction %, which does not exist',
            bad.txn_id
            USING ERRCODE = 'foreign_key_violation';
    ELSIF FOUND THEN
        RAISE EXCEPTION 'coalition ledger: transaction % does not balance (% entries, sum %)',
            bad.txn_id, bad.legs, bad.total
            USING ERRCODE = 'check_violation';
    END IF;

    -- 2. Every account the statement wrote to exists.
    SELECT touched.account_id INTO missing
      FROM (SELECT DISTINCT account_id FROM new_entries) AS touched
     CROSS JOIN LATERAL (
            SELECT EXISTS (SELECT 1 FROM coalition_account AS a
                            WHERE a.id = touched.account_id) AS present
           ) AS found
     WHERE NOT found.present
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'coalition ledger: an entry on account %, which does not exist', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;

    -- 3. Move every touched member wallet by the sum of its new entries, in one UPDATE that
    --    also returns a wallet a debit left with negative spendable points (usually none).
    WITH moved AS (
        SELECT account_id, sum(points) AS points, min(points) < 0 AS debited
          FROM new_entries
         GROUP BY account_id
    ), posted AS (
        UPDATE coalition_account AS a
           SET balance = a.balance + moved.points
          FROM moved
         WHERE a.id = moved.account_id AND a.kind = 'member_wallet'
        RETURNING a.id, a.balance, a.held, moved.debited
    )
    SELECT id INTO short_wallet FROM posted WHERE debited AND balance - held < 0 LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    -- 4. Some wallet went below what it can spend: an error only if a spend debited it.
    SELECT t.kind AS txn_kind, a.id AS account_id, a.balance, a.held
      INTO bad
      FROM new_entries AS e
      JOIN coalition_transaction AS t ON t.id = e.transaction_id
      JOIN coalition_account AS a ON a.id = e.account_id
     WHERE e.points < 0
       AND a.kind = 'member_wallet'
       AND a.balance - a.held < 0
       AND t.kind IN ('burn', 'donate', 'expire', 'adjustment')
       AND t.hold_id IS NULL
     ORDER BY a.id
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'coalition ledger: % would overspend wallet % (balance %, held %)',
            bad.txn_kind, bad.account_id, bad.balance, bad.held
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS coalition_entry_balanced ON coalition_entry;
DROP TRIGGER IF EXISTS coalition_entry_posts_to_wallet ON coalition_entry;

CREATE TRIGGER coalition_entry_statement
    AFTER INSERT ON coalition_entry
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION coalition_entries_after_insert();
