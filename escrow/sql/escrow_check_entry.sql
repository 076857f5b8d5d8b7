-- escrow_check_entry(): At commit, every journal entry balances: its postings sum to zero, in its currency.
-- Installed by escrow/migrations/0006_post_entry_function.py. This is the text the database holds after
-- the latest migration (pg_get_functiondef / pg_get_triggerdef); tests/escrow/test_sql_files.py
-- checks that. To change it, edit it here and add a migration that installs the new text
-- as a string of its own (applied migrations keep theirs, so replaying them is unchanged).

CREATE OR REPLACE FUNCTION public.escrow_check_entry(entry bigint)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    total numeric;
    legs integer;
    foreign_legs integer;
BEGIN
    -- From here on this entry's postings queue their own check again (posting trigger's WHEN).
    IF current_setting('escrow.unchecked_entry', true) = entry::text THEN
        PERFORM set_config('escrow.unchecked_entry', '', true);
    END IF;
    SELECT COALESCE(SUM(p.amount), 0), COUNT(*),
           COUNT(*) FILTER (WHERE p.currency <> e.currency OR a.currency <> e.currency)
      INTO total, legs, foreign_legs
      FROM escrow_journalentry e
      LEFT JOIN escrow_posting p ON p.entry_id = e.id
      LEFT JOIN escrow_ledgeraccount a ON a.id = p.account_id
     WHERE e.id = entry;
    IF total <> 0 OR legs < 2 OR foreign_legs > 0 THEN
        RAISE EXCEPTION 'journal entry % is not balanced (sum %, % legs, % in another currency)',
            entry, total, legs, foreign_legs
            USING ERRCODE = 'check_violation';
    END IF;
END;
$function$;
