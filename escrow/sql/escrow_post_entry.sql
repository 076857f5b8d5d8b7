-- escrow_post_entry(): One posting to known accounts in one round trip (escrow/ledger/postgres.py _write_pg).
-- Installed by escrow/migrations/0006_post_entry_function.py. This is the text the database holds after
-- the latest migration (pg_get_functiondef / pg_get_triggerdef); tests/escrow/test_sql_files.py
-- checks that. To change it, edit it here and add a migration that installs the new text
-- as a string of its own (applied migrations keep theirs, so replaying them is unchanged).

CREATE OR REPLACE FUNCTION public.escrow_post_entry(p_reference text, p_kind text, p_currency text, p_amount bigint, p_memo text, p_project_id bigint, p_milestone_id bigint, p_party_id bigint, p_created_at timestamp with time zone, p_accounts bigint[], p_amounts bigint[], p_change_accounts bigint[], p_change_deltas bigint[], p_change_slots integer[])
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
    new_id bigint;
    refused text;
BEGIN
    INSERT INTO escrow_journalentry (reference, kind, currency, amount, memo, project_id,
                                     milestone_id, party_id, created_at)
    VALUES (p_reference, p_kind, p_currency, p_amount, p_memo, p_project_id, p_milestone_id,
            p_party_id, p_created_at)
    ON CONFLICT (reference) DO NOTHING
    RETURNING id INTO new_id;
    IF new_id IS NULL THEN
        RETURN NULL;
    END IF;
    -- The entry's own deferred check (0002) is now queued and will see every posting below,
    -- so they need not queue one each (see escrow_check_entry and the posting trigger's WHEN).
    PERFORM set_config('escrow.unchecked_entry', new_id::text, true);

    INSERT INTO escrow_posting (entry_id, account_id, amount, currency)
    SELECT new_id, leg.account_id, leg.amount, p_currency
      FROM unnest(p_accounts, p_amounts) WITH ORDINALITY AS leg(account_id, amount, n)
     ORDER BY leg.n;

    FOR i IN 1 .. coalesce(array_length(p_change_accounts, 1), 0) LOOP
        IF p_change_slots[i] IS NULL THEN
            UPDATE escrow_ledgeraccount SET balance = balance + p_change_deltas[i]
             WHERE id = p_change_accounts[i];
        ELSE
            INSERT INTO escrow_ledgerbalanceslot (account_id, slot, amount)
            VALUES (p_change_accounts[i], p_change_slots[i], p_change_deltas[i])
            ON CONFLICT (account_id, slot) DO UPDATE
               SET amount = escrow_ledgerbalanceslot.amount + EXCLUDED.amount;
        END IF;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'ledger account % does not exist', p_change_accounts[i]
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    END LOOP;
    RETURN new_id;
EXCEPTION WHEN check_violation THEN
    GET STACKED DIAGNOSTICS refused = CONSTRAINT_NAME;
    IF refused = 'ledger_restricted_not_negative' THEN
        RETURN -1;
    END IF;
    RAISE;
END;
$function$;
