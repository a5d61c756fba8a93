-- The embedded SQLite default: the same rule as postgresql_idempotency_per_caller.sql (an
-- idempotency key is unique per caller across transactions, holds and recorded writes),
-- row by row. The message starts with the constraint's name, which the services look for.
-- A later migration that rebuilds one of these tables on SQLite (Django copies the table)
-- drops its triggers: it must take these off and put them back, as 0011 does the ledger rules.
CREATE TRIGGER coalition_transaction_key_per_caller AFTER INSERT ON coalition_transaction
WHEN NEW.idempotency_key IS NOT NULL AND (
    EXISTS (SELECT 1 FROM coalition_hold
             WHERE caller = NEW.caller AND idempotency_key = NEW.idempotency_key)
    OR EXISTS (SELECT 1 FROM coalition_idempotency
                WHERE caller = NEW.caller AND idempotency_key = NEW.idempotency_key))
BEGIN
    SELECT RAISE(ABORT, 'idempotency_key_per_caller: the key is already used for another kind of write');
END;
CREATE TRIGGER coalition_hold_key_per_caller AFTER INSERT ON coalition_hold
WHEN EXISTS (SELECT 1 FROM coalition_transaction
              WHERE caller = NEW.caller AND idempotency_key = NEW.idempotency_key)
    OR EXISTS (SELECT 1 FROM coalition_idempotency
                WHERE caller = NEW.caller AND idempotency_key = NEW.idempotency_key)
BEGIN
    SELECT RAISE(ABORT, 'idempotency_key_per_caller: the key is already used for another kind of write');
END;
CREATE TRIGGER coalition_idempotency_key_per_caller AFTER INSERT ON coalition_idempotency
WHEN EXISTS (SELECT 1 FROM coalition_transaction
              WHERE caller = NEW.caller AND idempotency_key = NEW.idempotency_key)
    OR EXISTS (SELECT 1 FROM coalition_hold
                WHERE caller = NEW.caller AND idempotency_key = NEW.idempotency_key)
BEGIN
    SELECT RAISE(ABORT, 'idempotency_key_per_caller: the key is already used for another kind of write');
END;
