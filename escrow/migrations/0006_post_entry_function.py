"""escrow_post_entry(): one journal entry in one round trip on PostgreSQL.

`escrow.ledger.post_entry` validates the entry in Python (balanced, one currency, non-zero
integer legs), orders the balance changes by account id and picks the slots; this function then
writes exactly what the portable path writes statement by statement:

- the entry, or nothing and NULL when its reference exists already (a parallel transaction
  posting the same reference is waited for, as a plain INSERT would);
- its postings;
- each balance change in the order given: a restricted account's own row (where the CHECK
  `ledger_restricted_not_negative` refuses an overdraft) or one slot row of a shared account.

All of it runs in the function's own subtransaction (the EXCEPTION block): when the CHECK
refuses an overdraft, nothing of the entry remains, the function returns -1 and the caller's
transaction carries on, as after the portable path's savepoint. Every other error is raised.
The deferred triggers of 0002 still check each entry at commit, so a wrong call (unbalanced
legs, another currency) cannot commit either.

SQLite (the embedded default) keeps the statement-by-statement path in escrow/ledger.py.
"""

from django.db import migrations

# 0002's escrow_check_entry, with (forward) or without (backward) the line that ends the skip.
_SKIP_ENDS = r"""    -- From here on this entry's postings queue their own check again (posting trigger's WHEN).
    IF current_setting('escrow.unchecked_entry', true) = entry::text THEN
        PERFORM set_config('escrow.unchecked_entry', '', true);
    END IF;
"""

_CHECK_ENTRY = r"""CREATE OR REPLACE FUNCTION escrow_check_entry(entry bigint) RETURNS void AS $$
DECLARE
    total numeric;
    legs integer;
    foreign_legs integer;
BEGIN
{mark}    SELECT COALESCE(SUM(p.amount), 0), COUNT(*),
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
$$ LANGUAGE plpgsql;
"""


def _check_entry(skip_ends: str) -> str:
    return _CHECK_ENTRY.replace("{mark}", skip_ends)


FORWARD = r"""
CREATE OR REPLACE FUNCTION escrow_post_entry(
    p_reference text, p_kind text, p_currency text, p_amount bigint, p_memo text,
    p_project_id bigint, p_milestone_id bigint, p_party_id bigint, p_created_at timestamptz,
    p_accounts bigint[], p_amounts bigint[],
    p_change_accounts bigint[], p_change_deltas bigint[], p_change_slots int[]
) RETURNS bigint AS $$
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
$$ LANGUAGE plpgsql;

-- Dedupe of the commit-time checks. escrow_post_entry() names the entry it just inserted in
-- the transaction-local setting escrow.unchecked_entry; while it is named, its entry's own
-- deferred check is still to run and will see all its postings, so a posting of that entry
-- queues no check of its own (a constraint trigger's WHEN is evaluated at insert time). The
-- check clears the name when it runs, so a posting added after that (SET CONSTRAINTS ...
-- IMMEDIATE, then another insert) is checked again. Any other posting, including every one
-- written by raw SQL, queues its check as before. A rolled-back savepoint restores the setting
-- together with the rows and trigger events it covered.
""" + _check_entry(_SKIP_ENDS) + r"""
DROP TRIGGER IF EXISTS escrow_posting_balanced ON escrow_posting;
CREATE CONSTRAINT TRIGGER escrow_posting_balanced AFTER INSERT ON escrow_posting
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.entry_id::text IS DISTINCT FROM current_setting('escrow.unchecked_entry', true))
    EXECUTE FUNCTION escrow_posting_balanced();
"""

BACKWARD = r"""
DROP TRIGGER IF EXISTS escrow_posting_balanced ON escrow_posting;
CREATE CONSTRAINT TRIGGER escrow_posting_balanced AFTER INSERT ON escrow_posting
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION escrow_posting_balanced();
""" + _check_entry("") + r"""DROP FUNCTION IF EXISTS escrow_post_entry(
    text, text, text, bigint, text, bigint, bigint, bigint, timestamptz,
    bigint[], bigint[], bigint[], bigint[], int[]
);
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("escrow", "0005_journal_kind_payout_reversed")]

    operations = [migrations.RunPython(forward, backward)]
