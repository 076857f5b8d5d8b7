"""escrow_post_entry_to(): a journal entry to accounts named by (code, currency), found or created
in the same round trip on PostgreSQL.

`escrow.ledger.post_entry` called with AccountSpecs instead of LedgerAccounts (a funding, a
payout: entries that need no balance read first) validates the entry in Python as always,
adds up each account's change and picks the slots, and sends the accounts once each with the
legs pointing at them. This function then does what the portable path does in three steps:

- finds each account by (code, currency), one unique-index lookup each, or creates it with
  `INSERT .. ON CONFLICT DO NOTHING` (a transaction creating the same account in parallel is
  waited for and its row read, as `ledger.accounts()` does);
- returns NULL for a repeated reference of an entry that must empty an account, before the
  check below (the account is empty by then);
- refuses (returns -2, writes nothing) when an account the entry must empty (a settlement's
  escrow) would not end at zero: its balance is read first, under the caller's milestone lock,
  as `ledger.post_settlement` read it before it moved the whole escrow out;
- orders the balance changes by account id, the one lock order of every posting;
- hands the entry to escrow_post_entry() (0006), which writes it, its postings and the balance
  changes in its own subtransaction and returns the id, NULL for a reference posted already, or
  -1 when a restricted account's CHECK refused an overdraft.

Accounts are created outside that subtransaction, as `ledger.accounts()` creates them before
the entry. Nothing is decided here that Python did not decide: the kind, the restricted flag,
the signed change and the slot of every account arrive as arguments.
"""

from django.db import migrations

FORWARD = r"""
CREATE OR REPLACE FUNCTION escrow_post_entry_to(
    p_reference text, p_kind text, p_currency text, p_amount bigint, p_memo text,
    p_project_id bigint, p_milestone_id bigint, p_party_id bigint, p_created_at timestamptz,
    p_codes text[], p_kinds text[], p_restricted boolean[], p_milestones bigint[],
    p_users bigint[], p_deltas bigint[], p_slots int[], p_empties boolean[],
    p_leg_accounts int[], p_leg_amounts bigint[]
) RETURNS bigint AS $$
DECLARE
    ids bigint[] := '{}';
    account bigint;
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
        SELECT id INTO account FROM escrow_ledgeraccount
         WHERE code = p_codes[i] AND currency = p_currency;
        IF account IS NULL THEN
            INSERT INTO escrow_ledgeraccount (code, kind, currency, balance, is_restricted,
                                              milestone_id, user_id, created_at)
            VALUES (p_codes[i], p_kinds[i], p_currency, 0, p_restricted[i], p_milestones[i],
                    p_users[i], p_created_at)
            ON CONFLICT (code, currency) DO NOTHING
            RETURNING id INTO account;
            IF account IS NULL THEN  -- a parallel transaction created it and has committed
                SELECT id INTO account FROM escrow_ledgeraccount
                 WHERE code = p_codes[i] AND currency = p_currency;
            END IF;
            IF account IS NULL THEN
                RAISE EXCEPTION 'ledger account % (%) could not be found or created',
                    p_codes[i], p_currency;
            END IF;
        END IF;
        ids := ids || account;
        IF p_empties[i] AND NOT EXISTS (
            SELECT 1 FROM escrow_ledgeraccount
             WHERE id = account AND is_restricted AND balance + p_deltas[i] = 0
        ) THEN
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
$$ LANGUAGE plpgsql;
"""

BACKWARD = r"""
DROP FUNCTION IF EXISTS escrow_post_entry_to(
    text, text, text, bigint, text, bigint, bigint, bigint, timestamptz,
    text[], text[], boolean[], bigint[], bigint[], bigint[], int[], boolean[], int[], bigint[]
);
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("escrow", "0007_fewer_ledger_indexes")]

    operations = [migrations.RunPython(forward, backward)]
