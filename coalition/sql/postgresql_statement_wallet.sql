-- Statement-level wallet posting on PostgreSQL (reverse: postgresql_statement_wallet_reverse.sql).
--
-- Replaces the row-level trigger coalition_entry_posts_to_wallet (one UPDATE per entry) with
-- one trigger per INSERT statement on coalition_entry that reads the inserted rows from a
-- transition table:
--
-- 1. every member wallet the statement touched gets its cached balance moved by the sum of
--    its new entries, in one UPDATE (non-wallet accounts are not touched, as before);
-- 2. the spend guard, set-based: if any wallet that received a negative entry of a spend
--    (burn, donate, expire, adjustment) not capturing a hold now has balance - held < 0,
--    the statement fails with the same check_violation and message as before.
--
-- The guard looks at the balance after the whole statement: a multi-row INSERT that both
-- credits and debits one wallet is checked on its net result (single-entry statements, the
-- only kind Django's create() issues, behave exactly as the row-level trigger did).

CREATE OR REPLACE FUNCTION coalition_post_to_wallet_statement() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
    short_wallet bigint;
BEGIN
    -- One statement in the common case: move every touched wallet and return only those a
    -- debit left with negative spendable points (usually none).
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

    -- Some wallet went below what it can spend: an error only if a spend debited it.
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

DROP TRIGGER IF EXISTS coalition_entry_posts_to_wallet ON coalition_entry;

CREATE TRIGGER coalition_entry_posts_to_wallet
    AFTER INSERT ON coalition_entry
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION coalition_post_to_wallet_statement();
