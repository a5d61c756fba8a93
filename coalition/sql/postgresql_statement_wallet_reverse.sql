-- Back to the row-level wallet trigger of postgresql_ledger_rules.sql (its function,
-- coalition_post_to_wallet, is left in place by postgresql_statement_wallet.sql).
DROP TRIGGER IF EXISTS coalition_entry_posts_to_wallet ON coalition_entry;
DROP FUNCTION IF EXISTS coalition_post_to_wallet_statement();

CREATE TRIGGER coalition_entry_posts_to_wallet
    AFTER INSERT ON coalition_entry
    FOR EACH ROW EXECUTE FUNCTION coalition_post_to_wallet();
