"""What an entry is before it is written: its legs, its row, and the errors both write paths
(posting.py's portable one and postgres.py's) raise."""

from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, connections

from escrow.exceptions import InsufficientFunds, UnbalancedEntry
from escrow.ledger.accounts import AccountSpec
from escrow.models import JournalEntry, LedgerAccount


@dataclass(frozen=True)
class Posted:
    entry: JournalEntry
    created: bool


Account = LedgerAccount | AccountSpec


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
