"""The database itself guards the ledger, whatever code (or a person with psql) writes to it.

PostgreSQL: entries and postings are immutable, every entry must balance in its own currency at
commit (deferred constraint triggers), and restricted balances cannot go negative (CHECK).
SQLite (the embedded default) has no triggers, but the CHECK constraints still hold, and a
refused overdraft leaves nothing behind on either database.
"""

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import F

from escrow import ledger
from escrow.exceptions import InsufficientFunds
from escrow.models import JournalEntry, LedgerAccount, Milestone, Posting
from tests.conftest import requires_postgres
from tests.escrow.factories import MilestoneFactory, fund
from tests.factories import ContractorFactory


def ledger_snapshot() -> tuple:
    return (
        list(JournalEntry.objects.order_by("pk").values_list("pk", "reference", "amount")),
        list(Posting.objects.order_by("pk").values_list("pk", "entry_id", "amount", "currency")),
        list(LedgerAccount.objects.order_by("pk").values_list("pk", "balance")),
    )


def insert_entry(cursor, *, reference: str, currency: str = "usd", amount: int = 100) -> int:
    cursor.execute(
        "INSERT INTO escrow_journalentry (reference, kind, currency, amount, memo, created_at) "
        "VALUES (%s, 'adjustment', %s, %s, '', now()) RETURNING id",
        [reference, currency, amount],
    )
    return cursor.fetchone()[0]


def insert_posting(cursor, *, entry_id: int, account: LedgerAccount, amount: int, currency=None):
    cursor.execute(
        "INSERT INTO escrow_posting (entry_id, account_id, amount, currency) "
        "VALUES (%s, %s, %s, %s)",
        [entry_id, account.pk, amount, currency or account.currency],
    )


@pytest.fixture
def funded_entry(db):
    """A funded milestone: one fund entry, Dr gateway / Cr escrow."""
    milestone = fund(MilestoneFactory(amount=40_000))
    return JournalEntry.objects.get(milestone=milestone, kind=JournalEntry.Kind.FUND)


# --- PostgreSQL: immutability -----------------------------------------------------------------


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE escrow_posting SET amount = amount * 2 WHERE entry_id = %s",
        "DELETE FROM escrow_posting WHERE entry_id = %s",
        "UPDATE escrow_journalentry SET amount = 1 WHERE id = %s",
        "UPDATE escrow_journalentry SET reference = 'rewritten' WHERE id = %s",
        "DELETE FROM escrow_journalentry WHERE id = %s",
    ],
)
def test_raw_sql_cannot_change_or_delete_posted_rows(funded_entry, statement):
    before = ledger_snapshot()

    with (
        pytest.raises(IntegrityError, match="immutable"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement, [funded_entry.pk])

    assert ledger_snapshot() == before


# --- PostgreSQL: balanced at commit -----------------------------------------------------------


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "legs",
    [
        pytest.param([100, -60], id="legs-do-not-sum-to-zero"),
        pytest.param([100], id="one-leg"),
        pytest.param([], id="no-legs"),
    ],
)
def test_an_unbalanced_entry_written_by_raw_sql_fails_at_commit(funded_entry, legs):
    gateway = ledger.gateway_account("sandbox", "usd")
    revenue = ledger.revenue_account("usd")
    before = ledger_snapshot()

    with (
        pytest.raises(IntegrityError, match="not balanced"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        entry_id = insert_entry(cursor, reference="raw:unbalanced")
        for account, amount in zip([gateway, revenue], legs, strict=False):
            insert_posting(cursor, entry_id=entry_id, account=account, amount=amount)
        # Deferred: nothing is refused until the commit at the end of this block.

    assert ledger_snapshot() == before
    assert not JournalEntry.objects.filter(reference="raw:unbalanced").exists()


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_balanced_entry_written_by_raw_sql_commits(funded_entry):
    """The control for the test above: the trigger refuses only what is wrong."""
    gateway = ledger.gateway_account("sandbox", "usd")
    revenue = ledger.revenue_account("usd")

    with transaction.atomic(), connection.cursor() as cursor:
        entry_id = insert_entry(cursor, reference="raw:balanced")
        insert_posting(cursor, entry_id=entry_id, account=gateway, amount=100)
        insert_posting(cursor, entry_id=entry_id, account=revenue, amount=-100)

    assert JournalEntry.objects.get(reference="raw:balanced").postings.count() == 2


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_posting_added_later_to_a_balanced_entry_fails_at_commit(funded_entry):
    revenue = ledger.revenue_account("usd")
    before = ledger_snapshot()

    with (
        pytest.raises(IntegrityError, match="not balanced"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        insert_posting(cursor, entry_id=funded_entry.pk, account=revenue, amount=-5)

    assert ledger_snapshot() == before


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("checked_early", [False, True], ids=["at-commit", "checked-early"])
def test_a_posting_added_to_an_entry_posted_in_the_same_transaction_fails_at_commit(
    funded_entry, checked_early
):
    """post_entry's postings queue no check of their own while their entry's check is pending;
    a posting added by raw SQL afterwards must still be caught: by that entry check at commit,
    or, when SET CONSTRAINTS ... IMMEDIATE ran the entry's check early, by its own (the skip
    ends when the entry's check runs), or the entry would commit unbalanced."""
    gateway = ledger.gateway_account("sandbox", "usd")
    revenue = ledger.revenue_account("usd")
    before = ledger_snapshot()

    with (
        pytest.raises(IntegrityError, match="not balanced"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        posted = ledger.post_entry(
            reference="fresh",
            kind="adjustment",
            currency="usd",
            legs=[ledger.debit(gateway, 100), ledger.credit(revenue, 100)],
        )
        if checked_early:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the entry's check runs, passes
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        insert_posting(cursor, entry_id=posted.entry.pk, account=revenue, amount=-5)

    assert ledger_snapshot() == before


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_refused_multi_leg_settlement_undoes_the_legs_already_applied(funded_entry):
    """escrow_post_entry applies balance changes one by one in account order; when a later
    restricted account refuses, the earlier changes (and the entry) are undone with it."""
    escrow = LedgerAccount.objects.get(kind="escrow")
    contractor = ContractorFactory()
    payable = ledger.payable_account(contractor.pk, "usd")
    gateway = ledger.gateway_account("sandbox", "usd")
    before = ledger_snapshot()
    # payable was created after escrow, so it comes second: escrow's -500 applies, then the
    # payable's overdraft is refused.
    legs = [
        ledger.debit(escrow, 500),
        ledger.credit(gateway, 500),
        ledger.debit(payable, 1),
        ledger.credit(gateway, 1),
    ]

    with transaction.atomic(), pytest.raises(InsufficientFunds):
        ledger.post_entry(reference="two-legs", kind="adjustment", currency="usd", legs=legs)

    assert ledger_snapshot() == before
    assert ledger.balance(escrow) == 40_000


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("account_currency", "posting_currency"),
    [
        pytest.param("eur", "eur", id="eur-postings-on-a-usd-entry"),
        pytest.param("eur", "usd", id="usd-postings-on-eur-accounts"),
        pytest.param("usd", "eur", id="eur-postings-on-usd-accounts"),
    ],
)
def test_a_posting_in_another_currency_than_its_entry_fails_at_commit(
    funded_entry, account_currency, posting_currency
):
    gateway = ledger.gateway_account("sandbox", account_currency)
    revenue = ledger.revenue_account(account_currency)
    before = ledger_snapshot()

    with (
        pytest.raises(IntegrityError, match="another currency"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        entry_id = insert_entry(cursor, reference="raw:currency", currency="usd")
        for account, amount in [(gateway, 100), (revenue, -100)]:
            insert_posting(
                cursor,
                entry_id=entry_id,
                account=account,
                amount=amount,
                currency=posting_currency,
            )

    assert ledger_snapshot() == before


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_raw_update_to_a_negative_escrow_balance_is_refused_by_the_check(funded_entry):
    escrow = LedgerAccount.objects.get(kind=LedgerAccount.Kind.ESCROW)
    before = ledger_snapshot()

    with (
        pytest.raises(IntegrityError, match="ledger_restricted_not_negative"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "UPDATE escrow_ledgeraccount SET balance = balance - 40001 WHERE id = %s",
            [escrow.pk],
        )

    assert ledger_snapshot() == before
    assert LedgerAccount.objects.get(pk=escrow.pk).balance == 40_000


# --- Any database: the CHECK constraints --------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("kind", sorted(LedgerAccount.RESTRICTED))
def test_a_restricted_balance_can_never_be_negative(funded_entry, kind):
    account = {
        LedgerAccount.Kind.ESCROW: lambda: LedgerAccount.objects.get(kind="escrow"),
        LedgerAccount.Kind.PAYABLE: lambda: ledger.payable_account(ContractorFactory().pk, "usd"),
        LedgerAccount.Kind.PAYOUT_IN_TRANSIT: lambda: ledger.in_transit_account("usd"),
        LedgerAccount.Kind.HOLD: lambda: ledger.accounts(
            ledger.hold_spec(Milestone.objects.get(), "payment-refund:1")
        )[0],
    }[kind]()
    before = ledger_snapshot()

    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerAccount.objects.filter(pk=account.pk).update(balance=F("balance") - 40_001)

    assert ledger_snapshot() == before


@pytest.mark.django_db
def test_unrestricted_accounts_may_go_negative(funded_entry):
    """The control: only restricted accounts carry the CHECK (a gateway can owe us)."""
    gateway = ledger.gateway_account("sandbox", "usd")

    with transaction.atomic():
        LedgerAccount.objects.filter(pk=gateway.pk).update(balance=-1)

    assert LedgerAccount.objects.get(pk=gateway.pk).balance == -1


@pytest.mark.django_db
def test_a_refused_overdraft_leaves_no_entry_even_if_the_caller_carries_on(funded_entry):
    """post_entry says "nothing is written" on InsufficientFunds. A caller that catches the
    error and keeps its transaction (say, to record a failed payout) must not commit an empty,
    unbalanced entry, and a later retry with the same reference must really post."""
    escrow = LedgerAccount.objects.get(kind="escrow")
    gateway = ledger.gateway_account("sandbox", "usd")
    before = ledger_snapshot()
    legs = [ledger.debit(escrow, 40_001), ledger.credit(gateway, 40_001)]

    with transaction.atomic():
        with pytest.raises(InsufficientFunds):
            ledger.post_entry(reference="overdraw", kind="adjustment", currency="usd", legs=legs)
        assert not JournalEntry.objects.filter(reference="overdraw").exists()

    assert ledger_snapshot() == before
    with transaction.atomic():
        posted = ledger.post_entry(
            reference="overdraw",
            kind="adjustment",
            currency="usd",
            legs=[ledger.debit(escrow, 40_000), ledger.credit(gateway, 40_000)],
        )
    assert posted.created and posted.entry.postings.count() == 2
    assert ledger.balance(escrow) == 0
