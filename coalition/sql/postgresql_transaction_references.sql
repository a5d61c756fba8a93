-- Transactions' references checked by a statement-level trigger instead of foreign keys, and
-- the entry and lot checks made cheaper (reverse: postgresql_transaction_references_reverse.sql).
--
-- The foreign keys of coalition_transaction (member, partner, charity, hold, reversal_of)
-- were checked row by row at commit, each check an SPI query taking a KEY SHARE lock on the
-- parent: every posting at a partner locked that partner's row, so all of a partner's
-- concurrent postings shared (and multixact-ed) one row, and a file of 1,000 purchases ran
-- 2,000 checks at COMMIT (about 11 ms). As postgresql_entry_references.sql did for entries
-- and lots: one query per INSERT statement checks that every parent the new transactions
-- name exists, probing each distinct parent's primary key once. Every probe is a correlated
-- scalar subquery: PostgreSQL may turn an EXISTS into a hashed subplan that reads the whole
-- parent table (it did, for 250 expiry transactions against a 20,000-row table), and a
-- transition table has no statistics to warn it; a scalar subquery is always a probe.
-- Parents cannot disappear afterwards: members, partners, charities and holds refuse
-- deletion while a transaction names them (triggers below), and transactions are immutable.
--
-- Entries: a statement must write all of a transaction's legs (the balance check has refused
-- anything else since postgresql_statement_balance.sql), so every transaction balanced before
-- the statement and its sum over all entries is the sum over the statement's own entries:
-- the check aggregates the transition table instead of probing coalition_entry once per
-- transaction. Accounts are checked to exist only when they are not member wallets the same
-- statement's UPDATE has just found (usually one partner account instead of 1,001 probes).
--
-- Lots: a lot belongs to the member of the transaction that made it (every path writing lots
-- takes the member from that transaction's wallet), so one probe of the transaction checks
-- both references; the transaction's own member was checked when it was written.

CREATE OR REPLACE FUNCTION coalition_check_transaction_references() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT refs.what, refs.id INTO bad
      FROM (SELECT DISTINCT 'member' AS what, member_id AS id
              FROM new_transactions WHERE member_id IS NOT NULL
            UNION ALL
            SELECT DISTINCT 'partner', partner_id
              FROM new_transactions WHERE partner_id IS NOT NULL
            UNION ALL
            SELECT DISTINCT 'charity', charity_id
              FROM new_transactions WHERE charity_id IS NOT NULL
            UNION ALL
            SELECT DISTINCT 'hold', hold_id
              FROM new_transactions WHERE hold_id IS NOT NULL
            UNION ALL
            SELECT DISTINCT 'transaction', reversal_of_id
              FROM new_transactions WHERE reversal_of_id IS NOT NULL) AS refs
     CROSS JOIN LATERAL (
            SELECT CASE refs.what
                     WHEN 'member' THEN
                         (SELECT m.id FROM coalition_member AS m WHERE m.id = refs.id)
                     WHEN 'partner' THEN
                         (SELECT p.id FROM partners_partner AS p WHERE p.id = refs.id)
                     WHEN 'charity' THEN
                         (SELECT c.id FROM charity_charity AS c WHERE c.id = refs.id)
                     WHEN 'hold' THEN
                         (SELECT h.id FROM coalition_hold AS h WHERE h.id = refs.id)
                     ELSE
                         (SELECT t.id FROM coalition_transaction AS t WHERE t.id = refs.id)
                   END IS NOT NULL AS present
           ) AS found
     WHERE NOT found.present
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'coalition ledger: a transaction names % %, which does not exist',
            bad.what, bad.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS coalition_transaction_references ON coalition_transaction;

CREATE TRIGGER coalition_transaction_references
    AFTER INSERT ON coalition_transaction
    REFERENCING NEW TABLE AS new_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION coalition_check_transaction_references();

CREATE OR REPLACE FUNCTION coalition_entries_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
    missing bigint;
    short_wallet bigint;
BEGIN
    -- 1. Every transaction the statement wrote to exists, has >= 2 entries and sums to zero.
    SELECT sums.txn_id, sums.legs, sums.total, found.present
      INTO bad
      FROM (SELECT transaction_id AS txn_id, count(*) AS legs, sum(points) AS total
              FROM new_entries
             GROUP BY transaction_id) AS sums
     CROSS JOIN LATERAL (
            SELECT (SELECT t.id FROM coalition_transaction AS t WHERE t.id = sums.txn_id)
                   IS NOT NULL AS present
           ) AS found
     WHERE NOT found.present OR sums.legs < 2 OR sums.total <> 0
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

    -- 2. Move every touched member wallet by the sum of its new entries, in one UPDATE that
    --    also returns a wallet a debit left with negative spendable points (usually none);
    --    every other account written to must exist.
    WITH moved AS (
        SELECT account_id, sum(points) AS points, min(points) < 0 AS debited
          FROM new_entries
         GROUP BY account_id
    ), posted AS (
        UPDATE coalition_account AS a
           SET balance = a.balance + moved.points
          FROM moved
         WHERE a.id = moved.account_id AND a.kind = 'member_wallet'
        RETURNING a.id, moved.debited AND a.balance - a.held < 0 AS short
    )
    SELECT (SELECT posted.id FROM posted WHERE posted.short LIMIT 1),
           (SELECT moved.account_id
              FROM moved
             WHERE NOT EXISTS (SELECT 1 FROM posted WHERE posted.id = moved.account_id)
               AND (SELECT a.id FROM coalition_account AS a WHERE a.id = moved.account_id)
                   IS NULL
             LIMIT 1)
      INTO short_wallet, missing;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'coalition ledger: an entry on account %, which does not exist', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF short_wallet IS NULL THEN
        RETURN NULL;
    END IF;

    -- 3. Some wallet went below what it can spend: an error only if a spend debited it.
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
    -- A correlated scalar subquery: one primary-key probe per lot, never a hashed scan.
    SELECT l.member_id, l.transaction_id INTO bad
      FROM new_lots AS l
     WHERE (SELECT t.member_id FROM coalition_transaction AS t WHERE t.id = l.transaction_id)
           IS DISTINCT FROM l.member_id
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'coalition ledger: a lot of member % from transaction %, which does not exist or is not that member''s',
            bad.member_id, bad.transaction_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION coalition_refuse_referenced_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    -- The transactions' column that names a row of this table (deletes are rare: dynamic SQL).
    named_by text := CASE TG_TABLE_NAME
                         WHEN 'coalition_member' THEN 'member_id'
                         WHEN 'partners_partner' THEN 'partner_id'
                         WHEN 'charity_charity' THEN 'charity_id'
                         WHEN 'coalition_hold' THEN 'hold_id'
                     END;
    named boolean;
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
    IF named_by IS NOT NULL THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM coalition_transaction WHERE %I = $1)',
                       named_by)
           INTO named USING OLD.id;
        IF named THEN
            RAISE EXCEPTION 'coalition ledger: % % has transactions and cannot be deleted',
                replace(named_by, '_id', ''), OLD.id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    END IF;
    RETURN OLD;
END;
$$;

DROP TRIGGER IF EXISTS coalition_partner_keeps_transactions ON partners_partner;
DROP TRIGGER IF EXISTS coalition_charity_keeps_transactions ON charity_charity;
DROP TRIGGER IF EXISTS coalition_hold_keeps_transactions ON coalition_hold;

CREATE TRIGGER coalition_partner_keeps_transactions
    BEFORE DELETE ON partners_partner
    FOR EACH ROW EXECUTE FUNCTION coalition_refuse_referenced_delete();

CREATE TRIGGER coalition_charity_keeps_transactions
    BEFORE DELETE ON charity_charity
    FOR EACH ROW EXECUTE FUNCTION coalition_refuse_referenced_delete();

CREATE TRIGGER coalition_hold_keeps_transactions
    BEFORE DELETE ON coalition_hold
    FOR EACH ROW EXECUTE FUNCTION coalition_refuse_referenced_delete();
