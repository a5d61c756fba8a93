DROP TRIGGER IF EXISTS coalition_idempotency_key_per_caller;
DROP TRIGGER IF EXISTS coalition_hold_key_per_caller;
DROP TRIGGER IF EXISTS coalition_transaction_key_per_caller;
