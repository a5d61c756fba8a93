-- Back to two statement-level triggers on coalition_entry (their functions are still there).

DROP TRIGGER IF EXISTS coalition_entry_statement ON coalition_entry;
DROP FUNCTION IF EXISTS coalition_entries_after_insert();

CREATE TRIGGER coalition_entry_balanced
    AFTER INSERT ON coalition_entry
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION coalition_check_balanced_statement();

CREATE TRIGGER coalition_entry_posts_to_wallet
    AFTER INSERT ON coalition_entry
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION coalition_post_to_wallet_statement();
