"""Posting one balanced entry: validation, account resolution, the lock order, and the
portable write (SQLite; PostgreSQL takes postgres.py's one round trip)."""

from collections import defaultdict

from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.utils import timezone

from escrow.exceptions import UnbalancedEntry
from escrow.ledger.accounts import AccountSpec, accounts
from escrow.ledger.balances import _slot, balances_of
from escrow.ledger.entries import (
    Account,
    Posted,
    _entry_row,
    _not_emptied,
    _overdraft,
    _posted,
    _validate,
)
from escrow.ledger.postgres import _write_pg, _write_pg_to_specs
from escrow.models import JournalEntry, LedgerAccount, Milestone

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
