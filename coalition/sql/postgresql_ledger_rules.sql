-- Ledger rules the database enforces on PostgreSQL (reverse: postgresql_ledger_rules_reverse.sql).
--
-- 1. Entries are append-only and transactions never change: UPDATE and DELETE are rejected.
-- 2. Every transaction has at least two entries summing to zero, checked at commit.
-- 3. A member wallet's cached balance is maintained here, from the entries themselves.
-- 4. A spend (burn, donate, expire, negative adjustment) never takes a wallet's spendable
--    points (balance - held) below zero. Reversals may; hold captures keep what was reserved.

CREATE OR REPLACE FUNCTION coalition_reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'coalition ledger: % on % is not allowed; post a reversing transaction instead',
        TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER coalition_entry_append_only
    BEFORE UPDATE OR DELETE ON coalition_entry
    FOR EACH ROW EXECUTE FUNCTION coalition_reject_change();

CREATE TRIGGER coalition_transaction_immutable
    BEFORE UPDATE OR DELETE ON coalition_transaction
    FOR EACH ROW EXECUTE FUNCTION coalition_reject_change();

CREATE OR REPLACE FUNCTION coalition_check_balanced() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    txn_id bigint;
    total numeric;
    legs integer;
BEGIN
    IF TG_TABLE_NAME = 'coalition_entry' THEN
        txn_id := NEW.transaction_id;
    ELSE
        txn_id := NEW.id;
    END IF;
    SELECT coalesce(sum(points), 0), count(*) INTO total, legs
      FROM coalition_entry WHERE transaction_id = txn_id;
    IF legs < 2 OR total <> 0 THEN
        RAISE EXCEPTION 'coalition ledger: transaction % does not balance (% entries, sum %)',
            txn_id, legs, total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER coalition_entry_balanced
    AFTER INSERT ON coalition_entry
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION coalition_check_balanced();

CREATE CONSTRAINT TRIGGER coalition_transaction_balanced
    AFTER INSERT ON coalition_transaction
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION coalition_check_balanced();

CREATE OR REPLACE FUNCTION coalition_post_to_wallet() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    new_balance bigint;
    new_held bigint;
    txn_kind text;
    txn_hold bigint;
BEGIN
    UPDATE coalition_account
       SET balance = balance + NEW.points
     WHERE id = NEW.account_id AND kind = 'member_wallet'
    RETURNING balance, held INTO new_balance, new_held;
    IF FOUND AND NEW.points < 0 AND new_balance - new_held < 0 THEN
        SELECT kind, hold_id INTO txn_kind, txn_hold
          FROM coalition_transaction WHERE id = NEW.transaction_id;
        IF txn_kind IN ('burn', 'donate', 'expire', 'adjustment') AND txn_hold IS NULL THEN
            RAISE EXCEPTION 'coalition ledger: % would overspend wallet % (balance %, held %)',
                txn_kind, NEW.account_id, new_balance, new_held
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER coalition_entry_posts_to_wallet
    AFTER INSERT ON coalition_entry
    FOR EACH ROW EXECUTE FUNCTION coalition_post_to_wallet();

-- A hold may only reserve points the wallet can spend.
CREATE OR REPLACE FUNCTION coalition_check_hold_reserve() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind = 'member_wallet' AND NEW.held > OLD.held AND NEW.balance - NEW.held < 0 THEN
        RAISE EXCEPTION 'coalition ledger: hold would reserve more than wallet % can spend', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER coalition_account_hold_guard
    BEFORE UPDATE OF held ON coalition_account
    FOR EACH ROW EXECUTE FUNCTION coalition_check_hold_reserve();
