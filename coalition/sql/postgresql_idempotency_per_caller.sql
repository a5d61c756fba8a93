-- An idempotency key is unique per caller across every kind of write (DESIGN: "Every write
-- from outside carries an idempotency key, unique per caller"). Each table keeps its own
-- unique index (caller, idempotency_key), which makes retries of one kind of write safe;
-- these triggers add that a key a caller already used for one kind of write (a ledger
-- transaction, a hold, or another write recorded in coalition_idempotency) is refused for
-- another kind: the caller's retry of a hold with a burn's key is an error, not a second
-- write. The error names the constraint `idempotency_key_per_caller`; the services turn it
-- into IdempotencyConflict.
--
-- Committed rows only: two requests of one caller racing with one key for two different
-- kinds of write can both pass (each table's own index still catches a race within it).
-- A write refused here because the other committed after the write looked retries once
-- (coalition/services/idempotency.py, ledger_write): a batch then refuses just that row.
--
-- Transactions: once per statement (a batch of purchases, a COPY of expiries), one scalar
-- probe per keyed row into each of the two other unique indexes; rows without a key (the
-- expiry sweep's, say) cost nothing.
CREATE FUNCTION coalition_transaction_key_per_caller() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    used_caller text;
    used_key text;
BEGIN
    SELECT n.caller, n.idempotency_key INTO used_caller, used_key
      FROM new_transactions n
     WHERE n.idempotency_key IS NOT NULL
       AND ((SELECT h.id FROM coalition_hold h
              WHERE h.caller = n.caller AND h.idempotency_key = n.idempotency_key) IS NOT NULL
            OR (SELECT r.id FROM coalition_idempotency r
                 WHERE r.caller = n.caller AND r.idempotency_key = n.idempotency_key) IS NOT NULL)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'coalition: caller % already used idempotency key % for another kind of write',
            used_caller, used_key
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'idempotency_key_per_caller';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER coalition_transaction_key_per_caller
    AFTER INSERT ON coalition_transaction
    REFERENCING NEW TABLE AS new_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION coalition_transaction_key_per_caller();

-- Holds and recorded writes: one row at a time (they are written one at a time), probing
-- the two tables other than their own.
CREATE FUNCTION coalition_key_per_caller() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT t.id FROM coalition_transaction t
         WHERE t.caller = NEW.caller AND t.idempotency_key = NEW.idempotency_key) IS NOT NULL
       OR (TG_TABLE_NAME <> 'coalition_hold'
           AND (SELECT h.id FROM coalition_hold h
                 WHERE h.caller = NEW.caller AND h.idempotency_key = NEW.idempotency_key)
               IS NOT NULL)
       OR (TG_TABLE_NAME <> 'coalition_idempotency'
           AND (SELECT r.id FROM coalition_idempotency r
                 WHERE r.caller = NEW.caller AND r.idempotency_key = NEW.idempotency_key)
               IS NOT NULL)
    THEN
        RAISE EXCEPTION 'coalition: caller % already used idempotency key % for another kind of write',
            NEW.caller, NEW.idempotency_key
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'idempotency_key_per_caller';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER coalition_hold_key_per_caller
    AFTER INSERT ON coalition_hold
    FOR EACH ROW EXECUTE FUNCTION coalition_key_per_caller();

CREATE TRIGGER coalition_idempotency_key_per_caller
    AFTER INSERT ON coalition_idempotency
    FOR EACH ROW EXECUTE FUNCTION coalition_key_per_caller();
