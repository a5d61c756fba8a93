-- References of entries and lots checked by the ledger's statement-level triggers instead of
-- foreign keys (reverse: postgresql_entry_references_reverse.sql).
--
-- A foreign key is checked row by row at commit, and each check takes a KEY SHARE lock on the
-- parent row: every posting of a partner locked that partner's issued account, so concurrent
-- postings shared (and PostgreSQL multixact-ed) one hot row. Here one query per INSERT
-- statement checks that the rows it wrote point at transactions, accounts and members that
-- exist; parents cannot disappear afterwards, as transactions are immutable (a DELETE is
-- refused since postgresql_ledger_rules.sql) and accounts and members refuse deletion while
-- entries or lots point at them (triggers below). Each check probes the parent's primary key
-- once per distinct parent (LATERAL: a transition table has no statistics, and a join could
-- otherwise be planned as a scan of the whole parent table).

CREATE OR REPLACE FUNCTION coalition_check_balanced_statement() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
    missing bigint;
BEGIN
    SELECT touched.txn_id, sums.legs, sums.total, sums.present
      INTO bad
      FROM (SELECT DISTINCT transaction_id AS txn_id FROM new_entries) AS touched
     CROSS JOIN LATERAL (
            SELECT count(*) AS legs, coalesce(sum(e.points), 0) AS total,
                   EXISTS (SELECT 1 FROM coalition_transaction AS t
                            WHERE t.id = touched.txn_id) AS present
              FROM coalition_entry AS e
             WHERE e.transaction_id = touched.txn_id
           ) AS sums
     WHERE NOT sums.present OR sums.legs < 2 OR sums.total <> 0
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

    SELECT touched.account_id INTO missing
      FROM (SELECT DISTINCT account_id FROM new_entries) AS touched
     CROSS JOIN LATERAL (
            SELECT EXISTS (SELECT 1 FROM coalition_account AS a
                            WHERE a.id = touched.account_id) AS present
           ) AS found
     WHERE NOT found.present
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'coalition ledger: an entry on account %, which does not exist', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION coalition_check_lot_references() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT touched.member_id, touched.transaction_id, found.member_ok, found.txn_ok
      INTO bad
      FROM (SELECT DISTINCT member_id, transaction_id FROM new_lots) AS touched
     CROSS JOIN LATERAL (
            SELECT EXISTS (SELECT 1 FROM coalition_member AS m
                            WHERE m.id = touched.member_id) AS member_ok,
                   EXISTS (SELECT 1 FROM coalition_transaction AS t
                            WHERE t.id = touched.transaction_id) AS txn_ok
           ) AS found
     WHERE NOT (found.member_ok AND found.txn_ok)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'coalition ledger: a lot of member % from transaction %, which does not exist',
            bad.member_id, bad.transaction_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER coalition_lot_references
    AFTER INSERT ON coalition_lot
    REFERENCING NEW TABLE AS new_lots
    FOR EACH STATEMENT EXECUTE FUNCTION coalition_check_lot_references();

CREATE OR REPLACE FUNCTION coalition_refuse_referenced_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
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
    RETURN OLD;
END;
$$;

CREATE TRIGGER coalition_account_keeps_entries
    BEFORE DELETE ON coalition_account
    FOR EACH ROW EXECUTE FUNCTION coalition_refuse_referenced_delete();

CREATE TRIGGER coalition_member_keeps_lots
    BEFORE DELETE ON coalition_member
    FOR EACH ROW EXECUTE FUNCTION coalition_refuse_referenced_delete();
