DROP TRIGGER IF EXISTS coalition_entry_posts_to_wallet;
DROP TRIGGER IF EXISTS coalition_transaction_no_delete;
DROP TRIGGER IF EXISTS coalition_transaction_no_update;
DROP TRIGGER IF EXISTS coalition_entry_no_delete;
DROP TRIGGER IF EXISTS coalition_entry_no_update;
