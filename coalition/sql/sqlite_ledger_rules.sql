-- The embedded SQLite default: the same append-only rules and wallet posting as PostgreSQL;
-- the commit-time balance check and spend guard live in the services there.
CREATE TRIGGER coalition_entry_no_update BEFORE UPDATE ON coalition_entry
BEGIN SELECT RAISE(ABORT, 'coalition ledger: entries are append-only'); END;
CREATE TRIGGER coalition_entry_no_delete BEFORE DELETE ON coalition_entry
BEGIN SELECT RAISE(ABORT, 'coalition ledger: entries are append-only'); END;
CREATE TRIGGER coalition_transaction_no_update BEFORE UPDATE ON coalition_transaction
BEGIN SELECT RAISE(ABORT, 'coalition ledger: transactions are immutable'); END;
CREATE TRIGGER coalition_transaction_no_delete BEFORE DELETE ON coalition_transaction
BEGIN SELECT RAISE(ABORT, 'coalition ledger: transactions are immutable'); END;
CREATE TRIGGER coalition_entry_posts_to_wallet AFTER INSERT ON coalition_entry
BEGIN
    UPDATE coalition_account SET balance = balance + NEW.points
     WHERE id = NEW.account_id AND kind = 'member_wallet';
END;
