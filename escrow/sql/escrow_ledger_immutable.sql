-- escrow_ledger_immutable(): Posted journal entries and postings are never updated or deleted, not even by raw SQL.
-- Installed by escrow/migrations/0002_ledger_triggers.py. This is the text the database holds after
-- the latest migration (pg_get_functiondef / pg_get_triggerdef); tests/escrow/test_sql_files.py
-- checks that. To change it, edit it here and add a migration that installs the new text
-- as a string of its own (applied migrations keep theirs, so replaying them is unchanged).

CREATE OR REPLACE FUNCTION public.escrow_ledger_immutable()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    RAISE EXCEPTION 'ledger rows are immutable: % on %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END;
$function$;

CREATE TRIGGER escrow_journalentry_immutable BEFORE DELETE OR UPDATE ON public.escrow_journalentry FOR EACH ROW EXECUTE FUNCTION escrow_ledger_immutable();

CREATE TRIGGER escrow_posting_immutable BEFORE DELETE OR UPDATE ON public.escrow_posting FOR EACH ROW EXECUTE FUNCTION escrow_ledger_immutable();
