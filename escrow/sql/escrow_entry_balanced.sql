-- escrow_entry_balanced(): The deferred check of each new journal entry (calls escrow_check_entry).
-- Installed by escrow/migrations/0002_ledger_triggers.py. This is the text the database holds after
-- the latest migration (pg_get_functiondef / pg_get_triggerdef); tests/escrow/test_sql_files.py
-- checks that. To change it, edit it here and add a migration that installs the new text
-- as a string of its own (applied migrations keep theirs, so replaying them is unchanged).

CREATE OR REPLACE FUNCTION public.escrow_entry_balanced()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    PERFORM escrow_check_entry(NEW.id);
    RETURN NULL;
END;
$function$;

CREATE CONSTRAINT TRIGGER escrow_journalentry_balanced AFTER INSERT ON public.escrow_journalentry DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION escrow_entry_balanced();
