-- escrow_posting_balanced(): The deferred check of an entry a posting was added to later (calls escrow_check_entry).
-- Installed by escrow/migrations/0006_post_entry_function.py. This is the text the database holds after
-- the latest migration (pg_get_functiondef / pg_get_triggerdef); tests/escrow/test_sql_files.py
-- checks that. To change it, edit it here and add a migration that installs the new text
-- as a string of its own (applied migrations keep theirs, so replaying them is unchanged).

CREATE OR REPLACE FUNCTION public.escrow_posting_balanced()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    PERFORM escrow_check_entry(NEW.entry_id);
    RETURN NULL;
END;
$function$;

CREATE CONSTRAINT TRIGGER escrow_posting_balanced AFTER INSERT ON public.escrow_posting DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (((new.entry_id)::text IS DISTINCT FROM current_setting('escrow.unchecked_entry'::text, true))) EXECUTE FUNCTION escrow_posting_balanced();
