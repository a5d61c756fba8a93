DROP TRIGGER IF EXISTS coalition_idempotency_key_per_caller ON coalition_idempotency;
DROP TRIGGER IF EXISTS coalition_hold_key_per_caller ON coalition_hold;
DROP FUNCTION IF EXISTS coalition_key_per_caller();
DROP TRIGGER IF EXISTS coalition_transaction_key_per_caller ON coalition_transaction;
DROP FUNCTION IF EXISTS coalition_transaction_key_per_caller();
