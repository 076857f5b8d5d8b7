"""The ledger's own rules: balanced entries, no mixed currencies, one entry per reference,
no overdraft of a restricted account (the database CHECK), and check_ledger's verdicts."""

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from escrow import invariants, ledger
from escrow.exceptions import InsufficientFunds, UnbalancedEntry
from escrow.models import JournalEntry, LedgerAccount, LedgerBalanceSlot, Milestone, Posting
from tests.conftest import requires_postgres
from tests.escrow.factories import MilestoneFactory, fund

pytestmark = pytest.mark.django_db


def accounts():
    milestone = MilestoneFactory()
    return milestone, ledger.gateway_account("sandbox", "usd"), ledger.escrow_account(milestone)


@pytest.mark.parametrize(
    "amounts",
    [[100, -99], [100], [0, 0], [100, -100, 0], [1.5, -1.5]],
)
def test_unbalanced_or_malformed_legs_are_refused(amounts):
    _, gateway, escrow = accounts()
    legs = [(gateway if i % 2 == 0 else escrow, a) for i, a in enumerate(amounts)]

    with pytest.raises(UnbalancedEntry), transaction.atomic():
        ledger.post_entry(reference="bad", kind="adjustment", currency="usd", legs=legs)

    assert not JournalEntry.objects.exists() and not Posting.objects.exists()


def test_an_entry_never_mixes_currencies():
    _, gateway, _ = accounts()
    euros = ledger.revenue_account("eur")

    with pytest.raises(UnbalancedEntry), transaction.atomic():
        ledger.post_entry(
            reference="mixed", kind="adjustment", currency="usd", legs=[(gateway, 5), (euros, -5)]
        )

    assert not JournalEntry.objects.exists()


def test_one_reference_posts_once():
    _, gateway, escrow = accounts()
    legs = [(gateway, 500), (escrow, -500)]

    with transaction.atomic():
        first = ledger.post_entry(reference="r1", kind="fund", currency="usd", legs=legs)
        second = ledger.post_entry(reference="r1", kind="fund", currency="usd", legs=legs)

    assert first.created and not second.created and first.entry.pk == second.entry.pk
    assert ledger.balance(escrow) == 500 and Posting.objects.count() == 2


def test_overdrawing_escrow_is_refused_by_the_database_and_nothing_is_written():
    _, gateway, escrow = accounts()

    with pytest.raises(InsufficientFunds), transaction.atomic():
        ledger.post_entry(
            reference="overdraw", kind="refund", currency="usd", legs=[(escrow, 1), (gateway, -1)]
        )

    assert ledger.balance(escrow) == 0
    assert not JournalEntry.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_must_run_inside_a_transaction():
    _, gateway, escrow = accounts()

    with pytest.raises(RuntimeError):
        ledger.post_entry(
            reference="x", kind="fund", currency="usd", legs=[(gateway, 1), (escrow, -1)]
        )


def test_accounts_are_created_once_per_code_and_currency():
    milestone = MilestoneFactory()
    contractor_id = milestone.project.contractor_id

    assert ledger.escrow_account(milestone).pk == ledger.escrow_account(milestone).pk
    usd, eur = (
        ledger.payable_account(contractor_id, "usd"),
        ledger.payable_account(contractor_id, "eur"),
    )
    assert usd.pk != eur.pk and usd.pk == ledger.payable_account(contractor_id, "usd").pk
    assert ledger.escrow_account(milestone).is_restricted
    assert not ledger.gateway_account("sandbox", "usd").is_restricted


def test_check_ledger_passes_with_a_summary(capsys):
    fund(MilestoneFactory())

    call_command("check_ledger")

    output = capsys.readouterr().out.strip()
    assert output.startswith("ledger ok: 1 entries, 2 postings")
    assert len(output.splitlines()) == 1


def test_check_ledger_fails_on_a_balance_that_disagrees_with_its_postings(capsys):
    milestone = MilestoneFactory()
    fund(milestone)
    LedgerAccount.objects.filter(code="gateway:sandbox").update(balance=1)

    with pytest.raises(SystemExit) as exit_info:
        call_command("check_ledger")

    assert exit_info.value.code == 1
    assert "gateway:sandbox" in capsys.readouterr().out


def test_check_ledger_fails_when_escrow_disagrees_with_the_milestone_state():
    milestone = MilestoneFactory()
    fund(milestone)
    Milestone.objects.filter(pk=milestone.pk).update(status="released")

    problems = invariants.violations()

    assert any(f"milestone {milestone.pk} is released" in p for p in problems)


# --- Balance slots of shared accounts ------------------------------------------------------------


def test_shared_accounts_keep_their_balance_in_slots_and_restricted_ones_in_their_row(settings):
    """Gateway and revenue postings land in random slot rows (so parallel transactions do
    not queue on one row); escrow and payable stay in the row the CHECK guards."""
    settings.LEDGER_BALANCE_SLOTS = 4
    milestones = [MilestoneFactory(amount=10_000 + n) for n in range(12)]
    for milestone in milestones:
        fund(milestone)
    gateway = ledger.gateway_account("sandbox", "usd")
    escrows = [ledger.escrow_account(milestone) for milestone in milestones]
    total = sum(milestone.amount for milestone in milestones)

    slots = LedgerBalanceSlot.objects.filter(account=gateway)

    assert LedgerAccount.objects.get(pk=gateway.pk).balance == 0
    assert 1 <= slots.count() <= 4
    assert set(slots.values_list("slot", flat=True)) <= {0, 1, 2, 3}
    assert sum(slots.values_list("amount", flat=True)) == total
    assert ledger.balance(gateway) == total
    assert not LedgerBalanceSlot.objects.filter(account__in=escrows).exists()
    assert [ledger.balance(e) for e in escrows] == [m.amount for m in milestones]
    assert invariants.violations() == []


def test_check_ledger_counts_slots_and_fails_on_a_tampered_one(capsys):
    fund(MilestoneFactory(amount=5_000))
    LedgerBalanceSlot.objects.filter(account__code="gateway:sandbox").update(amount=4_999)

    with pytest.raises(SystemExit) as exit_info:
        call_command("check_ledger")

    assert exit_info.value.code == 1
    assert "gateway:sandbox (usd) balance 4999 != postings 5000" in capsys.readouterr().out


def test_check_ledger_fails_on_a_slot_of_a_restricted_account():
    milestone = MilestoneFactory()
    fund(milestone)
    LedgerBalanceSlot.objects.create(account=ledger.escrow_account(milestone), slot=0, amount=0)

    assert "1 balance slots on restricted accounts" in invariants.violations()


@requires_postgres
@pytest.mark.postgres
def test_on_postgresql_an_entry_is_written_in_one_round_trip():
    """The posting itself (entry, legs, balances) is one call of escrow_post_entry() on
    PostgreSQL (migration 0006); losing that would double the ledger's cost per entry
    (docs/PERFORMANCE.md). The written rows are the same as on the portable path."""
    _, gateway, escrow = accounts()
    legs = [ledger.debit(gateway, 700), ledger.credit(escrow, 700)]

    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        posted = ledger.post_entry(reference="one-trip", kind="fund", currency="usd", legs=legs)

    assert [q["sql"].split("(")[0] for q in queries.captured_queries] == [
        "SELECT escrow_post_entry"
    ]
    assert sorted(posted.entry.postings.values_list("account_id", "amount")) == sorted(
        [(gateway.pk, 700), (escrow.pk, -700)]
    )
    assert ledger.balance(gateway) == 700 and ledger.balance(escrow) == 700
