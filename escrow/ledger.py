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
from django.db import IntegrityError, connection, transaction
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
_FIND_ACCOUNT = (
    "SELECT id, code, kind, currency, balance, is_restricted, milestone_id, user_id "
    "FROM escrow_ledgeraccount WHERE code = %s AND currency = %s"
)


def _find_account(code: str, currency: str) -> LedgerAccount | None:
    with connection.cursor() as cursor:
        cursor.execute(_FIND_ACCOUNT, [code, currency])
        row = cursor.fetchone()
    if row is None:
        return None
    # Same as the ORM would build (created_at is left deferred).
    return LedgerAccount.from_db(connection.alias, _ACCOUNT_FIELDS, row)


_CREATE_ACCOUNT = (
    "INSERT INTO escrow_ledgeraccount (code, kind, currency, balance, is_restricted, "
    "milestone_id, user_id, created_at) VALUES (%s, %s, %s, 0, %s, %s, %s, %s) "
    "ON CONFLICT (code, currency) DO NOTHING RETURNING id"
)


def _account(
    *, code: str, kind: str, currency: str, milestone=None, user_id: int | None = None
) -> LedgerAccount:
    account = _find_account(code, currency)
    if account is not None:
        return account
    # Insert-or-nothing instead of insert-and-catch: no savepoint, and a transaction that
    # created the same account concurrently is waited for, then read.
    is_restricted = kind in LedgerAccount.RESTRICTED
    milestone_id = milestone.pk if milestone is not None else None
    created_at = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(
            _CREATE_ACCOUNT,
            [code, kind, currency, is_restricted, milestone_id, user_id, created_at],
        )
        row = cursor.fetchone()
    if row is None:
        return _find_account(code, currency)
    values = [row[0], code, kind, currency, 0, is_restricted, milestone_id, user_id]
    return LedgerAccount.from_db(connection.alias, _ACCOUNT_FIELDS, values)


def gateway_account(provider: str, currency: str) -> LedgerAccount:
    return _account(code=f"gateway:{provider}", kind=Kind.GATEWAY, currency=currency)


def escrow_account(milestone: Milestone) -> LedgerAccount:
    return _account(
        code=f"escrow:milestone:{milestone.pk}",
        kind=Kind.ESCROW,
        currency=milestone.project.currency,
        milestone=milestone,
    )


def payable_account(user_id: int, currency: str) -> LedgerAccount:
    return _account(
        code=f"payable:user:{user_id}", kind=Kind.PAYABLE, currency=currency, user_id=user_id
    )


def in_transit_account(currency: str) -> LedgerAccount:
    return _account(code="payout:in_transit", kind=Kind.PAYOUT_IN_TRANSIT, currency=currency)


def revenue_account(currency: str) -> LedgerAccount:
    return _account(code="revenue:fees", kind=Kind.REVENUE, currency=currency)


def gateway_fee_account(currency: str) -> LedgerAccount:
    return _account(code="expense:gateway_fees", kind=Kind.EXPENSE, currency=currency)


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


def post_entry(
    *,
    reference: str,
    kind: str,
    currency: str,
    legs: list[tuple[LedgerAccount, int]],
    milestone: Milestone | None = None,
    party_id: int | None = None,
    memo: str = "",
) -> Posted:
    """Post one balanced entry. Idempotent on `reference`: a second call returns the first
    entry with created=False and changes nothing.

    Raises UnbalancedEntry (legs do not sum to zero, mix currencies, or contain a zero) and
    InsufficientFunds (a restricted account would go negative; nothing is written then).
    """
    if not connection.in_atomic_block:
        raise RuntimeError("post_entry() must run inside the caller's transaction")
    _validate(currency=currency, legs=legs)
    per_account: dict[int, int] = defaultdict(int)
    accounts = {}
    for account, amount in legs:
        per_account[account.pk] += amount
        accounts[account.pk] = account
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
    try:
        # One savepoint for the entry, its legs and the balances: a duplicate reference or a
        # refused overdraft leaves nothing of this entry behind, even when the caller catches
        # the error and carries on with its transaction.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                _INSERT_ENTRY,
                [
                    entry.reference,
                    entry.kind,
                    entry.currency,
                    entry.amount,
                    entry.memo,
                    entry.project_id,
                    entry.milestone_id,
                    entry.party_id,
                    connection.ops.adapt_datetimefield_value(entry.created_at),
                ],
            )
            entry.pk = cursor.fetchone()[0]
            cursor.execute(
                _INSERT_POSTINGS + ", ".join(["(%s, %s, %s, %s)"] * len(legs)),
                [
                    value
                    for account, amount in legs
                    for value in (entry.pk, account.pk, amount, currency)
                ],
            )
            # Accounts in ascending id order, the one order every posting takes them in, so
            # two postings sharing accounts wait for each other instead of deadlocking (one
            # slot per account, so slot rows are taken in that order too). Restricted
            # accounts: their one row, where the CHECK refuses an overdraft. Shared ones: a
            # random slot, so parallel postings rarely wait for each other's commit.
            for account_id in sorted(per_account):
                delta = per_account[account_id] * accounts[account_id].normal_sign
                if not delta:
                    continue
                if accounts[account_id].is_restricted:
                    cursor.execute(_ADD_TO_BALANCE, [delta, account_id])
                else:
                    slot = random.randrange(settings.LEDGER_BALANCE_SLOTS)
                    cursor.execute(_ADD_TO_SLOT, [account_id, slot, delta])
    except IntegrityError as exc:
        existing = JournalEntry.objects.filter(reference=reference).first()
        if existing is not None:
            return Posted(entry=existing, created=False)
        if "ledger_restricted_not_negative" in str(exc):
            raise InsufficientFunds(
                f"Posting {reference} would overdraw a restricted account."
            ) from exc
        raise
    entry._state.adding = False
    entry._state.db = connection.alias
    return Posted(entry=entry, created=True)


def _validate(*, currency: str, legs: list[tuple[LedgerAccount, int]]) -> None:
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
def debit(account: LedgerAccount, amount: int) -> tuple[LedgerAccount, int]:
    return (account, amount)


def credit(account: LedgerAccount, amount: int) -> tuple[LedgerAccount, int]:
    return (account, -amount)


# --- The flows --------------------------------------------------------------------------------


def post_funding(*, milestone: Milestone, amount: int, provider: str, reference: str) -> Posted:
    """Funding succeeded: Dr gateway:<provider> / Cr escrow:milestone:<id>."""
    currency = milestone.project.currency
    return post_entry(
        reference=f"fund:{reference}",
        kind=JournalEntry.Kind.FUND,
        currency=currency,
        legs=[
            debit(gateway_account(provider, currency), amount),
            credit(escrow_account(milestone), amount),
        ],
        milestone=milestone,
        party_id=milestone.project.homeowner_id,
    )


def post_settlement(
    *, milestone: Milestone, release_amount: int, fee: int, kind: str, reference: str
) -> Posted:
    """Move the milestone's whole escrow out in one entry: the released part to the contractor's
    payable (minus the fee, which goes to revenue) and the rest back to the gateway (refund).
    Used for a release (release_amount == escrow), a refund (0) and a split (in between)."""
    currency = milestone.project.currency
    escrow = escrow_account(milestone)
    held = escrow.balance  # read just now by escrow_account(), under the milestone's lock
    refund_amount = held - release_amount
    if not 0 <= release_amount <= held or not 0 <= fee <= release_amount:
        raise InsufficientFunds(
            f"Milestone {milestone.pk} holds {held}; cannot release {release_amount}."
        )
    legs = [debit(escrow, held)]
    payout = release_amount - fee
    if payout:
        legs.append(credit(payable_account(milestone.project.contractor_id, currency), payout))
    if fee:
        legs.append(credit(revenue_account(currency), fee))
    if refund_amount:
        if not milestone.funded_via:
            raise UnbalancedEntry(f"milestone {milestone.pk} holds money but has no gateway")
        legs.append(credit(gateway_account(milestone.funded_via, currency), refund_amount))
    return post_entry(
        reference=reference,
        kind=kind,
        currency=currency,
        legs=legs,
        milestone=milestone,
        party_id=milestone.project.contractor_id if release_amount else None,
    )


def post_payout_started(*, payout_reference: str, user_id: int, amount: int, currency: str):
    """A payout to a contractor was sent: Dr payable:user:<id> / Cr payout:in_transit."""
    return post_entry(
        reference=f"payout:{payout_reference}",
        kind=JournalEntry.Kind.PAYOUT_STARTED,
        currency=currency,
        legs=[
            debit(payable_account(user_id, currency), amount),
            credit(in_transit_account(currency), amount),
        ],
        party_id=user_id,
    )


def post_payout_paid(
    *, payout_reference: str, user_id: int, amount: int, currency: str, provider: str
):
    """The gateway paid it: Dr payout:in_transit / Cr gateway:<provider>."""
    return post_entry(
        reference=f"payout-paid:{payout_reference}",
        kind=JournalEntry.Kind.PAYOUT_PAID,
        currency=currency,
        legs=[
            debit(in_transit_account(currency), amount),
            credit(gateway_account(provider, currency), amount),
        ],
        party_id=user_id,
    )


def post_payout_failed(*, payout_reference: str, user_id: int, amount: int, currency: str):
    """A sent payout failed: the money is owed to the contractor again."""
    return post_entry(
        reference=f"payout-failed:{payout_reference}",
        kind=JournalEntry.Kind.PAYOUT_FAILED,
        currency=currency,
        legs=[
            debit(in_transit_account(currency), amount),
            credit(payable_account(user_id, currency), amount),
        ],
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
    return (
        LedgerAccount.objects.filter(kind=Kind.ESCROW, milestone__project_id=project_id).aggregate(
            total=Sum("balance")
        )["total"]
        or 0
    )


def escrow_balance_of(milestone_id: int) -> int:
    return (
        LedgerAccount.objects.filter(kind=Kind.ESCROW, milestone_id=milestone_id)
        .values_list("balance", flat=True)
        .first()
        or 0
    )
