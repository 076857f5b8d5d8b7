-- escrow_post_entry_to(): One posting to accounts found or created by (code, currency) in one round trip
-- (escrow/ledger/postgres.py _write_pg_to_specs).
-- Installed by escrow/migrations/0009_post_entry_to_reads_balance.py. This is the text the database holds after
-- the latest migration (pg_get_functiondef / pg_get_triggerdef); tests/escrow/test_sql_files.py
-- checks that. To change it, edit it here and add a migration that installs the new text
-- as a string of its own (applied migrations keep theirs, so replaying them is unchanged).

CREATE OR REPLACE FUNCTION public.escrow_post_entry_to(p_reference text, p_kind text, p_currency text, p_amount bigint, p_memo text, p_project_id bigint, p_milestone_id bigint, p_party_id bigint, p_created_at timestamp with time zone, p_codes text[], p_kinds text[], p_restricted boolean[], p_milestones bigint[], p_users bigint[], p_deltas bigint[], p_slots integer[], p_empties boolean[], p_leg_accounts integer[], p_leg_amounts bigint[])
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
    ids bigint[] := '{}';
    account bigint;
    held bigint;
    restricted boolean;
    leg_ids bigint[] := '{}';
    change_ids bigint[];
    change_deltas bigint[];
    change_slots int[];
BEGIN
    -- A repeat of an entry that must empty an account finds it empty already: answer as for
    -- any repeated reference (escrow_post_entry would), before the balance check refuses it.
    IF true = ANY(p_empties)
       AND EXISTS (SELECT 1 FROM escrow_journalentry WHERE reference = p_reference) THEN
        RETURN NULL;
    END IF;
    FOR i IN 1 .. coalesce(array_length(p_codes, 1), 0) LOOP
        SELECT id, balance, is_restricted INTO account, held, restricted
          FROM escrow_ledgeraccount WHERE code = p_codes[i] AND currency = p_currency;
        IF account IS NULL THEN
            INSERT INTO escrow_ledgeraccount (code, kind, currency, balance, is_restricted,
                                              milestone_id, user_id, created_at)
            VALUES (p_codes[i], p_kinds[i], p_currency, 0, p_restricted[i], p_milestones[i],
                    p_users[i], p_created_at)
            ON CONFLICT (code, currency) DO NOTHING
            RETURNING id, balance, is_restricted INTO account, held, restricted;
            IF account IS NULL THEN  -- a parallel transaction created it and has committed
                SELECT id, balance, is_restricted INTO account, held, restricted
                  FROM escrow_ledgeraccount WHERE code = p_codes[i] AND currency = p_currency;
            END IF;
            IF account IS NULL THEN
                RAISE EXCEPTION 'ledger account % (%) could not be found or created',
                    p_codes[i], p_currency;
            END IF;
        END IF;
        ids := ids || account;
        -- An account the entry must empty: restricted (one balance row, no slots) and at
        -- exactly zero after this entry's change.
        IF p_empties[i] AND NOT (restricted AND held + p_deltas[i] = 0) THEN
            RETURN -2;
        END IF;
    END LOOP;

    FOR i IN 1 .. coalesce(array_length(p_leg_accounts, 1), 0) LOOP
        leg_ids := leg_ids || ids[p_leg_accounts[i]];
    END LOOP;

    SELECT array_agg(c.id ORDER BY c.id), array_agg(c.delta ORDER BY c.id),
           array_agg(c.slot ORDER BY c.id)
      INTO change_ids, change_deltas, change_slots
      FROM unnest(ids, p_deltas, p_slots) AS c(id, delta, slot)
     WHERE c.delta <> 0;

    RETURN escrow_post_entry(p_reference, p_kind, p_currency, p_amount, p_memo, p_project_id,
                             p_milestone_id, p_party_id, p_created_at, leg_ids, p_leg_amounts,
                             change_ids, change_deltas, change_slots);
END;
$function$;
