"""Database-enforced ledger rules on PostgreSQL, beyond the CHECK constraints:

- journal entries and postings are immutable (corrections are new entries);
- at commit, every entry has at least two postings, sums to zero, and all its postings and
  their accounts are in the entry's currency (deferred constraint triggers, so the legs can be
  inserted one by one inside the transaction).

SQLite (the embedded try-it-out default) keeps the CHECK constraints and the code's checks only:
Django empties SQLite tables with DELETE between transactional tests, which an immutability
trigger would refuse.
"""

from django.db import migrations

FORWARD = r"""
CREATE OR REPLACE FUNCTION escrow_ledger_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'ledger rows are immutable: % on %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER escrow_journalentry_immutable BEFORE UPDATE OR DELETE ON escrow_journalentry
    FOR EACH ROW EXECUTE FUNCTION escrow_ledger_immutable();
CREATE TRIGGER escrow_posting_immutable BEFORE UPDATE OR DELETE ON escrow_posting
    FOR EACH ROW EXECUTE FUNCTION escrow_ledger_immutable();

CREATE OR REPLACE FUNCTION escrow_check_entry(entry bigint) RETURNS void AS $$
DECLARE
    total numeric;
    legs integer;
    foreign_legs integer;
BEGIN
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
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION escrow_entry_balanced() RETURNS trigger AS $$
BEGIN
    PERFORM escrow_check_entry(NEW.id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION escrow_posting_balanced() RETURNS trigger AS $$
BEGIN
    PERFORM escrow_check_entry(NEW.entry_id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE CONSTRAINT TRIGGER escrow_journalentry_balanced AFTER INSERT ON escrow_journalentry
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION escrow_entry_balanced();
CREATE CONSTRAINT TRIGGER escrow_posting_balanced AFTER INSERT ON escrow_posting
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION escrow_posting_balanced();
"""

BACKWARD = r"""
DROP TRIGGER IF EXISTS escrow_posting_balanced ON escrow_posting;
DROP TRIGGER IF EXISTS escrow_journalentry_balanced ON escrow_journalentry;
DROP TRIGGER IF EXISTS escrow_posting_immutable ON escrow_posting;
DROP TRIGGER IF EXISTS escrow_journalentry_immutable ON escrow_journalentry;
DROP FUNCTION IF EXISTS escrow_posting_balanced();
DROP FUNCTION IF EXISTS escrow_entry_balanced();
DROP FUNCTION IF EXISTS escrow_check_entry(bigint);
DROP FUNCTION IF EXISTS escrow_ledger_immutable();
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        # params=None: the SQL holds RAISE's own `%` placeholders, which must reach PostgreSQL
        # as written instead of being taken for query parameters.
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("escrow", "0001_initial")]

    operations = [migrations.RunPython(forward, backward)]
