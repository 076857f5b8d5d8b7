"""The double-entry ledger: accounts, entries and postings, and the flows of ARCHITECTURE.md.

Every function here joins the caller's transaction (the caller holds the aggregate's lock) and
must run inside one. Balances change with `UPDATE ... SET balance = balance + delta` in
ascending account id order, so two transactions touching the same accounts always lock them in
the same order (no deadlock) and the CHECK constraint refuses any overdraft of a restricted
account, whatever the code above it believed.
"""

import random
from collections import defaultdict
from dataclasses import dataclass

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.models import Sum
from django.utils import timezone

from escrow.exceptions import InsufficientFunds, UnbalancedEntry
from escrow.models import JournalEntry, LedgerAccount, LedgerBalanceSlot, Milestone

Kind = LedgerAccount.Kind


# --- Accounts ---------------------------------------------------------------------------------


# The hot path reads and writes ledger rows with plain SQL: the ORM spends ~0.35 ms of CPU
# building each statement, which was most of a posting's cost (bench/ledger.py, PERFORMANCE.md).
_ACCOUNT_FIELDS = ["id", "code", "kind", "currency", "balance", "is_restricted"]
_ACCOUNT_FIELDS += ["milestone_id", "user_id"]
_FIND_ACCOUNTS = (
    "SELECT id, code, kind, currency, balance, is_restricted, milestone_id, user_id "
    "FROM escrow_ledgeraccount WHERE (code, currency) IN ({})"
)
_CREATE_ACCOUNTS = (
    "INSERT INTO escrow_ledgeraccount (code, kind, currency, balance, is_restricted, "
    "milestone_id, user_id, created_at) VALUES {} "
    "ON CONFLICT (code, currency) DO NOTHING "
    "RETURNING id, code, kind, currency, balance, is_restricted, milestone_id, user_id"
)


@dataclass(frozen=True)
class AccountSpec:
    """Which account a leg needs: found by (code, currency), created with the rest if missing."""

    code: str
    kind: str
    currency: str
    milestone_id: int | None = None
    user_id: int | None = None


def _prepared_cursor():
    """A cursor for the ledger's function calls (escrow_post_entry, escrow_post_entry_to). On
    PostgreSQL it binds parameters on the server, so psycopg prepares the call once it has run
    `prepare_threshold` times on the connection (settings: DB_PREPARE_THRESHOLD). Django's
    default cursor interpolates the values, arrays included, into the SQL text in Python, and
    PostgreSQL parses it afresh every time. Only calls are prepared: their own plan reads no
    table, so a generic plan cannot go stale while a table grows (a prepared look-up planned
    when the accounts table was empty kept scanning it whole; bench/ledger.py). It is still
    Django's cursor wrapper, so transactions, error translation, execute_wrapper() and query
    capture see these statements as any other."""
    db = connections[DEFAULT_DB_ALIAS]  # once: each `connection.x` is a thread-local lookup
    if db.vendor != "postgresql":
        return db.cursor()
    from django.db.backends.postgresql.base import ServerBindingCursor

    db.ensure_connection()
    with db.wrap_database_errors:
        return db._prepare_cursor(ServerBindingCursor(db.connection))


def _find_accounts(specs) -> dict[tuple[str, str], LedgerAccount]:
    keys = list(dict.fromkeys((spec.code, spec.currency) for spec in specs))
    with connection.cursor() as cursor:
        cursor.execute(
            _FIND_ACCOUNTS.format(", ".join(["(%s, %s)"] * len(keys))),
            [value for key in keys for value in key],
        )
        return _from_rows(cursor.fetchall())


def _from_rows(rows) -> dict[tuple[str, str], LedgerAccount]:
    # Same as the ORM would build (created_at is left deferred).
    found = (LedgerAccount.from_db(connection.alias, _ACCOUNT_FIELDS, row) for row in rows)
    return {(account.code, account.currency): account for account in found}


def accounts(*specs: AccountSpec, found: dict | None = None) -> list[LedgerAccount]:
    """The accounts for `specs`, in order, in one query (and one more that creates any that do
    not exist yet). `found` is a lookup from `_find_accounts` made in this transaction."""
    if found is None:
        found = _find_accounts(specs)
    missing = {(s.code, s.currency): s for s in specs if (s.code, s.currency) not in found}
    missing = list(missing.values())
    if missing:
        # Insert-or-nothing instead of insert-and-catch: no savepoint, and a transaction that
        # created the same account concurrently is waited for, then read.
        created_at = connection.ops.adapt_datetimefield_value(timezone.now())
        values = []
        for spec in missing:
            values += [spec.code, spec.kind, spec.currency, spec.kind in LedgerAccount.RESTRICTED]
            values += [spec.milestone_id, spec.user_id, created_at]
        with connection.cursor() as cursor:
            cursor.execute(
                _CREATE_ACCOUNTS.format(
                    ", ".join(["(%s, %s, %s, 0, %s, %s, %s, %s)"] * len(missing))
                ),
                values,
            )
            rows = cursor.fetchall()
        found = {**found, **_from_rows(rows)}
        if len(rows) < len(missing):  # a parallel transaction created some of them just now
            found = {**found, **_find_accounts(missing)}
    return [found[(spec.code, spec.currency)] for spec in specs]


def gateway_spec(provider: str, currency: str) -> AccountSpec:
    return AccountSpec(f"gateway:{provider}", Kind.GATEWAY, currency)


def escrow_spec(milestone: Milestone) -> AccountSpec:
    return AccountSpec(
        f"escrow:milestone:{milestone.pk}",
        Kind.ESCROW,
        milestone.project.currency,
        milestone_id=milestone.pk,
    )


def hold_spec(milestone: Milestone, reference: str) -> AccountSpec:
    """The account holding what a pending refund of this milestone promised (restricted, so
    it can never give out more than was put in)."""
    return AccountSpec(
        f"hold:refund:{reference}",
        Kind.HOLD,
        milestone.project.currency,
        milestone_id=milestone.pk,
    )


def payable_spec(user_id: int, currency: str) -> AccountSpec:
    return AccountSpec(f"payable:user:{user_id}", Kind.PAYABLE, currency, user_id=user_id)


def in_transit_spec(currency: str) -> AccountSpec:
    return AccountSpec("payout:in_transit", Kind.PAYOUT_IN_TRANSIT, currency)


def revenue_spec(currency: str) -> AccountSpec:
    return AccountSpec("revenue:fees", Kind.REVENUE, currency)


def gateway_fee_spec(currency: str) -> AccountSpec:
    return AccountSpec("expense:gateway_fees", Kind.EXPENSE, currency)


def gateway_account(provider: str, currency: str) -> LedgerAccount:
    return accounts(gateway_spec(provider, currency))[0]


def escrow_account(milestone: Milestone) -> LedgerAccount:
    return accounts(escrow_spec(milestone))[0]


def payable_account(user_id: int, currency: str) -> LedgerAccount:
    return accounts(payable_spec(user_id, currency))[0]


def in_transit_account(currency: str) -> LedgerAccount:
    return accounts(in_transit_spec(currency))[0]


def revenue_account(currency: str) -> LedgerAccount:
    return accounts(revenue_spec(currency))[0]


def gateway_fee_account(currency: str) -> LedgerAccount:
    return accounts(gateway_fee_spec(currency))[0]


# --- Posting ----------------------------------------------------------------------------------


_INSERT_ENTRY = (
    "INSERT INTO escrow_journalentry (reference, kind, currency, amount, memo, project_id, "
    "milestone_id, party_id, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
)
_INSERT_POSTINGS = "INSERT INTO escrow_posting (entry_id, account_id, amount, currency) VALUES "
_ADD_TO_BALANCE = "UPDATE escrow_ledgeraccount SET balance = balance + %s WHERE id = %s"
_ADD_TO_SLOT = (
    "INSERT INTO escrow_ledgerbalanceslot (account_id, slot, amount) VALUES (%s, %s, %s) "
    "ON CONFLICT (account_id, slot) DO UPDATE "
    "SET amount = escrow_ledgerbalanceslot.amount + EXCLUDED.amount"
)


@dataclass(frozen=True)
class Posted:
    entry: JournalEntry
    created: bool


Account = LedgerAccount | AccountSpec


def post_entry(
    *,
    reference: str,
    kind: str,
    currency: str,
    legs: list[tuple[Account, int]],
    milestone: Milestone | None = None,
    party_id: int | None = None,
    memo: str = "",
    slot: int | None = None,
    empties: tuple[Account, ...] = (),
) -> Posted:
    """Post one balanced entry. Idempotent on `reference`: a second call returns the first
    entry with created=False and changes nothing.

    A leg's account is a LedgerAccount, or an AccountSpec for an account this call finds or
    creates (as accounts() would). On PostgreSQL an entry with AccountSpecs goes to the
    database in one round trip, look-ups and all (migration 0008), so a posting that reads no
    balance first needs no accounts() call of its own.

    `slot`: the balance slot for shared accounts instead of a random one. A transaction that
    posts several entries to one shared account passes the same slot to each, so it holds one
    slot row of that account, and two such transactions cannot each hold a slot the other
    wants next.

    `empties`: restricted accounts among the legs that the entry must leave at exactly zero (a
    settlement moves the milestone's whole escrow out). Their balances are read before
    anything is written, so the caller must hold the lock that guards them (the milestone's).

    Raises UnbalancedEntry (legs do not sum to zero, mix currencies, or contain a zero) and
    InsufficientFunds (a restricted account would go negative, or one of `empties` would not
    end at zero; nothing is written then).
    """
    db = connections[DEFAULT_DB_ALIAS]  # once: each `connection.x` is a thread-local lookup
    if not db.in_atomic_block:
        raise RuntimeError("post_entry() must run inside the caller's transaction")
    _validate(currency=currency, legs=legs)
    empty_keys = {(account.code, account.currency) for account in empties}
    if not empty_keys <= {(account.code, account.currency) for account, _ in legs}:
        raise UnbalancedEntry("an account the entry must empty is not one of its legs")
    if any(account.kind not in LedgerAccount.RESTRICTED for account in empties):
        raise UnbalancedEntry("only a restricted account can be required to end at zero")
    entry = JournalEntry(
        reference=reference,
        kind=kind,
        currency=currency,
        amount=sum(amount for _, amount in legs if amount > 0),
        memo=memo[:200],
        milestone=milestone,
        project_id=milestone.project_id if milestone is not None else None,
        party_id=party_id,
        created_at=timezone.now(),
    )
    if empty_keys or any(isinstance(account, AccountSpec) for account, _ in legs):
        if db.vendor == "postgresql":
            entry.pk = _write_pg_to_specs(entry, legs, slot, empty_keys)
            return _posted(entry)
        if empty_keys and JournalEntry.objects.filter(reference=reference).exists():
            entry.pk = None  # a repeat: the account it emptied is empty now
            return _posted(entry)
        specs = [account for account, _ in legs if isinstance(account, AccountSpec)]
        if specs:
            resolved = dict(zip(specs, accounts(*specs), strict=True))
            legs = [(resolved.get(account, account), amount) for account, amount in legs]
    per_account: dict[int, int] = defaultdict(int)
    by_id = {}
    for account, amount in legs:
        per_account[account.pk] += amount
        by_id[account.pk] = account
    # Accounts in ascending id order, the one order every posting takes them in, so two
    # postings sharing accounts wait for each other instead of deadlocking (one slot per
    # account, so slot rows are taken in that order too). Restricted accounts: their one row,
    # where the CHECK refuses an overdraft. Shared ones: a random slot, so parallel postings
    # rarely wait for each other's commit.
    changes = []  # (account id, delta, slot or None)
    for account_id in sorted(per_account):
        account = by_id[account_id]
        delta = per_account[account_id] * account.normal_sign
        if delta:
            changes.append((account_id, delta, _slot(account.is_restricted, slot)))
        emptied = (account.code, account.currency) in empty_keys
        if emptied and balances_of([account_id])[account_id] + delta != 0:
            raise _not_emptied(entry)
    write = _write_pg if db.vendor == "postgresql" else _write_portable
    entry.pk = write(entry, legs, changes)
    return _posted(entry)


def _slot(restricted: bool, slot: int | None) -> int | None:
    if restricted:
        return None
    return random.randrange(settings.LEDGER_BALANCE_SLOTS) if slot is None else slot


def _posted(entry: JournalEntry) -> Posted:
    if entry.pk is None:  # the reference was posted already (maybe by a parallel transaction)
        return Posted(entry=JournalEntry.objects.get(reference=entry.reference), created=False)
    entry._state.adding = False
    entry._state.db = DEFAULT_DB_ALIAS
    return Posted(entry=entry, created=True)


def _overdraft(entry: JournalEntry) -> InsufficientFunds:
    return InsufficientFunds(f"Posting {entry.reference} would overdraw a restricted account.")


def _not_emptied(entry: JournalEntry) -> InsufficientFunds:
    return InsufficientFunds(
        f"Posting {entry.reference} would leave money in an account it must empty; the ledger "
        "does not hold what the caller expected."
    )


def _entry_row(entry: JournalEntry) -> list:
    return [
        entry.reference,
        entry.kind,
        entry.currency,
        entry.amount,
        entry.memo,
        entry.project_id,
        entry.milestone_id,
        entry.party_id,
        connections[DEFAULT_DB_ALIAS].ops.adapt_datetimefield_value(entry.created_at),
    ]


# PostgreSQL: one round trip. escrow_post_entry() (migration 0006) inserts the entry, its
# postings and the balance changes inside its own subtransaction, and returns the entry's id,
# NULL when the reference exists already, or -1 when a restricted account's CHECK refused the
# overdraft (nothing of the entry is left then, and the caller's transaction carries on). The
# deferred triggers of migration 0002 still check every entry at commit.
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
    """escrow_post_entry_to() (migration 0008): each account once, with its signed change and
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
    parameter and cast in the SQL. psycopg dumps a Python list element by element in Python,
    the largest item in a posting's CPU profile; this is one join. Strings are always
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


def spec_of(account: LedgerAccount) -> AccountSpec:
    return AccountSpec(
        account.code, account.kind, account.currency, account.milestone_id, account.user_id
    )


def _write_portable(entry: JournalEntry, legs, changes) -> int | None:
    # One savepoint for the entry, its legs and the balances: a duplicate reference or a
    # refused overdraft leaves nothing of this entry behind, even when the caller catches the
    # error and carries on with its transaction.
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_INSERT_ENTRY, _entry_row(entry))
            entry_id = cursor.fetchone()[0]
            cursor.execute(
                _INSERT_POSTINGS + ", ".join(["(%s, %s, %s, %s)"] * len(legs)),
                [
                    value
                    for account, amount in legs
                    for value in (entry_id, account.pk, amount, entry.currency)
                ],
            )
            for account_id, delta, slot in changes:
                if slot is None:
                    cursor.execute(_ADD_TO_BALANCE, [delta, account_id])
                else:
                    cursor.execute(_ADD_TO_SLOT, [account_id, slot, delta])
    except IntegrityError as exc:
        if "ledger_restricted_not_negative" in str(exc):
            raise _overdraft(entry) from exc
        if JournalEntry.objects.filter(reference=entry.reference).exists():
            return None
        raise
    return entry_id


def _validate(*, currency: str, legs: list[tuple[Account, int]]) -> None:
    if len(legs) < 2:
        raise UnbalancedEntry("an entry needs at least two legs")
    for account, amount in legs:
        if type(amount) is not int or amount == 0:
            raise UnbalancedEntry(f"leg amounts must be non-zero integers, got {amount!r}")
        if account.currency != currency:
            raise UnbalancedEntry(f"{account} is not in {currency}; entries never mix currencies")
    if sum(amount for _, amount in legs) != 0:
        raise UnbalancedEntry("legs must sum to zero")


# Debits are positive, credits negative.
def debit(account: Account, amount: int) -> tuple[Account, int]:
    return (account, amount)


def credit(account: Account, amount: int) -> tuple[Account, int]:
    return (account, -amount)


# --- The flows --------------------------------------------------------------------------------


def post_funding(
    *,
    milestone: Milestone,
    amount: int,
    provider: str,
    reference: str,
    found: dict | None = None,
    slot: int | None = None,
) -> Posted:
    """Funding succeeded: Dr gateway:<provider> / Cr escrow:milestone:<id>. `found` and `slot`
    as for accounts() and post_entry() (a batch resolving its accounts in one query); without
    `found`, post_entry() finds or creates the two accounts itself."""
    gateway, escrow = gateway_spec(provider, milestone.project.currency), escrow_spec(milestone)
    if found is not None:
        gateway, escrow = accounts(gateway, escrow, found=found)
    return post_entry(
        slot=slot,
        reference=f"fund:{reference}",
        kind=JournalEntry.Kind.FUND,
        currency=escrow.currency,
        legs=[debit(gateway, amount), credit(escrow, amount)],
        milestone=milestone,
        party_id=milestone.project.homeowner_id,
    )


def post_settlement(
    *, milestone: Milestone, release_amount: int, fee: int, kind: str, reference: str
) -> Posted:
    """Move the milestone's whole escrow out in one entry: the released part to the contractor's
    payable (minus the fee, which goes to revenue) and the rest back to the gateway (refund).
    Used for a release (release_amount == escrow), a refund (0) and a split (in between).

    What escrow holds is the milestone's `held_amount` (the caller holds the milestone's lock),
    and the entry must leave the escrow account at exactly zero: if the ledger held anything
    else, nothing is posted (InsufficientFunds). On PostgreSQL that check, the look-ups and the
    entry are one round trip (post_entry with AccountSpecs)."""
    currency = milestone.project.currency
    held = milestone.held_amount
    refund_amount = held - release_amount
    if not 0 <= release_amount <= held or not 0 <= fee <= release_amount:
        raise InsufficientFunds(
            f"Milestone {milestone.pk} holds {held}; cannot release {release_amount}."
        )
    escrow = escrow_spec(milestone)
    legs = [debit(escrow, held)]
    payout = release_amount - fee
    if payout:
        legs.append(credit(payable_spec(milestone.project.contractor_id, currency), payout))
    if fee:
        legs.append(credit(revenue_spec(currency), fee))
    if refund_amount:
        if not milestone.funded_via:
            raise UnbalancedEntry(f"milestone {milestone.pk} holds money but has no gateway")
        legs.append(credit(gateway_spec(milestone.funded_via, currency), refund_amount))
    return post_entry(
        reference=reference,
        kind=kind,
        currency=currency,
        legs=legs,
        milestone=milestone,
        party_id=milestone.project.contractor_id if release_amount else None,
        empties=(escrow,),
    )


def post_payout_started(*, payout_reference: str, user_id: int, amount: int, currency: str):
    """A payout to a contractor was sent: Dr payable:user:<id> / Cr payout:in_transit."""
    payable, in_transit = payable_spec(user_id, currency), in_transit_spec(currency)
    return post_entry(
        reference=f"payout:{payout_reference}",
        kind=JournalEntry.Kind.PAYOUT_STARTED,
        currency=currency,
        legs=[debit(payable, amount), credit(in_transit, amount)],
        party_id=user_id,
    )


def post_payout_paid(
    *, payout_reference: str, user_id: int, amount: int, currency: str, provider: str
):
    """The gateway paid it: Dr payout:in_transit / Cr gateway:<provider>."""
    in_transit, gateway = in_transit_spec(currency), gateway_spec(provider, currency)
    return post_entry(
        reference=f"payout-paid:{payout_reference}",
        kind=JournalEntry.Kind.PAYOUT_PAID,
        currency=currency,
        legs=[debit(in_transit, amount), credit(gateway, amount)],
        party_id=user_id,
    )


def post_payout_failed(*, payout_reference: str, user_id: int, amount: int, currency: str):
    """A sent payout failed: the money is owed to the contractor again."""
    in_transit, payable = in_transit_spec(currency), payable_spec(user_id, currency)
    return post_entry(
        reference=f"payout-failed:{payout_reference}",
        kind=JournalEntry.Kind.PAYOUT_FAILED,
        currency=currency,
        legs=[debit(in_transit, amount), credit(payable, amount)],
        party_id=user_id,
    )


def balance(account: LedgerAccount) -> int:
    """The account's balance in its normal direction (row plus slots for shared accounts)."""
    return balances_of([account.pk])[account.pk]


def balances_of(account_ids) -> dict[int, int]:
    """Balances (row plus slots) of the given accounts, by id, in two queries."""
    ids = list(account_ids)
    result = dict(LedgerAccount.objects.filter(pk__in=ids).values_list("pk", "balance"))
    slots = (
        LedgerBalanceSlot.objects.filter(account_id__in=ids)
        .values("account_id")
        .annotate(total=Sum("amount"))
        .values_list("account_id", "total")
    )
    for account_id, total in slots:
        result[account_id] += total
    return result


def project_escrow_balance(project_id: int) -> int:
    """What escrow holds for all of a project's milestones."""
    return project_escrow_balances([project_id])[project_id]


def project_escrow_balances(project_ids) -> dict[int, int]:
    """project_escrow_balance for several projects in one query."""
    totals = dict.fromkeys(project_ids, 0)
    rows = (
        LedgerAccount.objects.filter(kind=Kind.ESCROW, milestone__project_id__in=totals)
        .values_list("milestone__project_id")
        .annotate(total=Sum("balance"))
    )
    totals.update({project_id: total or 0 for project_id, total in rows})
    return totals


def refund_holds_of(milestone_ids) -> dict[int, int]:
    """What the hold accounts of these milestones hold, by milestone id (pending refunds)."""
    totals = dict.fromkeys(milestone_ids, 0)
    rows = (
        LedgerAccount.objects.filter(kind=Kind.HOLD, milestone_id__in=totals)
        .values_list("milestone_id")
        .annotate(total=Sum("balance"))
    )
    totals.update({milestone_id: total or 0 for milestone_id, total in rows})
    return totals


def escrow_balance_of(milestone_id: int) -> int:
    return (
        LedgerAccount.objects.filter(kind=Kind.ESCROW, milestone_id=milestone_id)
        .values_list("balance", flat=True)
        .first()
        or 0
    )
