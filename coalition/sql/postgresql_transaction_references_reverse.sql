-- Back to foreign keys on coalition_transaction (the migration's field changes put them
-- back): drop the transactions' reference check and the guards on partners, charities and
-- holds, and restore the entry and lot checks as postgresql_entry_statement_trigger.sql and
-- postgresql_entry_references.sql wrote them.

DROP TRIGGER IF EXISTS coalition_partner_keeps_transactions ON partners_partner;
DROP TRIGGER IF EXISTS coalition_charity_keeps_transactions ON charity_charity;
DROP TRIGGER IF EXISTS coalition_hold_keeps_transactions ON coalition_hold;
DROP TRIGGER IF EXISTS coalition_transaction_references ON coalition_transaction;
DROP FUNCTION IF EXISTS coalition_check_transaction_references();

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

CREATE OR REPLACE FUNCTION coalition_check_lot_references() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT touched.member_id, touched.transaction_id, found.member_ok, found.txn_ok
      INTO bad
      FROM (SELECT DISTINCT member_id, transaction_id FROM new_lots) AS touched
     CROSS JOIN LATERAL (
            SELECT EXISTS (SELECT 1 FROM coalition_member AS m
                            WHERE m.id = touched.member_id) AS member_ok,
                   EXISTS (SELECT 1 FROM coalition_transaction AS t
                            WHERE t.id = touched.transaction_id) AS txn_ok
           ) AS found
     WHERE NOT (found.member_ok AND found.txn_ok)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'coalition ledger: a lot of member % from transaction %, which does not exist',
            bad.member_id, bad.transaction_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION coalition_refuse_referenced_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'coalition_account'
       AND EXISTS (SELECT 1 FROM coalition_entry WHERE account_id = OLD.id) THEN
        RAISE EXCEPTION 'coalition ledger: account % has entries and cannot be deleted', OLD.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF TG_TABLE_NAME = 'coalition_member'
       AND EXISTS (SELECT 1 FROM coalition_lot WHERE member_id = OLD.id) THEN
        RAISE EXCEPTION 'coalition ledger: member % has point lots and cannot be deleted', OLD.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN OLD;
END;
$$;
