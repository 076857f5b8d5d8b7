"""The PostgreSQL path: a posting is one call of a SQL function (escrow/sql/), bound on the
server and prepared once per connection."""

from collections import defaultdict

from django.db import DEFAULT_DB_ALIAS, connections

from escrow.ledger.accounts import AccountSpec, spec_of
from escrow.ledger.balances import _slot
from escrow.ledger.entries import _entry_row, _not_emptied, _overdraft
from escrow.models import JournalEntry, LedgerAccount


def _prepared_cursor():
    """A cursor for the ledger's function calls (escrow_post_entry, escrow_post_entry_to). On
    PostgreSQL it binds parameters on the server, so psycopg prepares the call once it has run
    `prepare_threshold` times on the connection (settings: DB_PREPARE_THRESHOLD). Django's
    default cursor interpolates the values, arrays included, into the SQL text in Python, and
    PostgreSQL parses it afresh every time. Only calls are prepared: their own plan reads no
    table, so a generic plan cannot go stale while a table grows (docs/PERFORMANCE.md). It is still
    Django's cursor wrapper, so transactions, error translation, execute_wrapper() and query
    capture see these statements as any other."""
    db = connections[DEFAULT_DB_ALIAS]  # once: each `connection.x` is a thread-local lookup
    if db.vendor != "postgresql":
        return db.cursor()
    from django.db.backends.postgresql.base import ServerBindingCursor

    db.ensure_connection()
    with db.wrap_database_errors:
        return db._prepare_cursor(ServerBindingCursor(db.connection))


# PostgreSQL: one round trip. escrow_post_entry() (escrow/sql/) inserts the entry, its
# postings and the balance changes inside its own subtransaction, and returns the entry's id,
# NULL when the reference exists already, or -1 when a restricted account's CHECK refused the
# overdraft (nothing of the entry is left then, and the caller's transaction carries on). The
# deferred triggers (escrow/sql/escrow_*_balanced.sql) still check every entry at commit.
_POST_ENTRY_PG = (
    "SELECT escrow_post_entry(%s, %s, %s, %s, %s, %s, %s, %s, %s, "
    "%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::int[])"
)


def _write_pg(entry: JournalEntry, legs, changes) -> int | None:
    with _prepared_cursor() as cursor:
        cursor.execute(
            _POST_ENTRY_PG,
            [
                *_entry_row(entry),
                _pg_array([account.pk for account, _ in legs]),
                _pg_array([amount for _, amount in legs]),
                _pg_array([account_id for account_id, _, _ in changes]),
                _pg_array([delta for _, delta, _ in changes]),
                _pg_array([slot for _, _, slot in changes]),
            ],
        )
        entry_id = cursor.fetchone()[0]
    if entry_id == -1:
        raise _overdraft(entry)
    return entry_id


_POST_ENTRY_TO_PG = (
    "SELECT escrow_post_entry_to(%s, %s, %s, %s, %s, %s, %s, %s, %s, "
    "%s::text[], %s::text[], %s::boolean[], %s::bigint[], %s::bigint[], %s::bigint[], "
    "%s::int[], %s::boolean[], %s::int[], %s::bigint[])"
)


def _write_pg_to_specs(entry: JournalEntry, legs, slot: int | None, empty_keys) -> int | None:
    """escrow_post_entry_to() (escrow/sql/): each account once, with its signed change and
    slot, and the legs as positions in that list; the function finds or creates the accounts
    and orders the changes by account id."""
    specs: dict[tuple[str, str], AccountSpec] = {}  # in order of first use
    positions: dict[tuple[str, str], int] = {}  # from 1, as PostgreSQL arrays count
    totals: dict[tuple[str, str], int] = defaultdict(int)
    leg_accounts = []
    for account, amount in legs:
        spec = account if isinstance(account, AccountSpec) else spec_of(account)
        key = (spec.code, spec.currency)
        specs.setdefault(key, spec)
        positions.setdefault(key, len(positions) + 1)
        totals[key] += amount
        leg_accounts.append(positions[key])
    restricted = [spec.kind in LedgerAccount.RESTRICTED for spec in specs.values()]
    deltas = [
        totals[key] * (1 if spec.kind in LedgerAccount.DEBIT_NORMAL else -1)
        for key, spec in specs.items()
    ]
    with _prepared_cursor() as cursor:
        cursor.execute(
            _POST_ENTRY_TO_PG,
            [
                *_entry_row(entry),
                _pg_array([spec.code for spec in specs.values()]),
                _pg_array([spec.kind for spec in specs.values()]),
                _pg_array(restricted),
                _pg_array([spec.milestone_id for spec in specs.values()]),
                _pg_array([spec.user_id for spec in specs.values()]),
                _pg_array(deltas),
                _pg_array([_slot(is_restricted, slot) for is_restricted in restricted]),
                _pg_array([key in empty_keys for key in specs]),
                _pg_array(leg_accounts),
                _pg_array([amount for _, amount in legs]),
            ],
        )
        entry_id = cursor.fetchone()[0]
    if entry_id == -1:
        raise _overdraft(entry)
    if entry_id == -2:
        raise _not_emptied(entry)
    return entry_id


def _pg_array(values: list) -> str:
    """A PostgreSQL array literal of ints, bools, strings and None (NULL), bound as one text
    parameter and cast in the SQL. psycopg dumps a Python list element by element in Python
    (too slow for the hot path: docs/PERFORMANCE.md); this is one join. Strings are always
    quoted, with backslash and double quote escaped, which is all array_in needs to read any
    text back unchanged."""
    return "{" + ",".join(map(_pg_array_element, values)) + "}"


def _pg_array_element(value) -> str:
    if value is None:
        return "NULL"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, int):  # bools are caught above
        return str(int(value))
    if isinstance(value, str):  # TextChoices members included
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"no PostgreSQL array element for {type(value).__name__}")
