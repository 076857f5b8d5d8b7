"""The ledger's own rules: balanced entries, no mixed currencies, one entry per reference,
no overdraft of a restricted account (the database CHECK), and check_ledger's verdicts."""

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from hypothesis import given, settings
from hypothesis import strategies as st

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


def entry_rows(entry: JournalEntry) -> list[tuple[str, int]]:
    return sorted(entry.postings.values_list("account__code", "amount"))


def test_accounts_named_by_spec_are_found_or_created_by_the_posting_itself():
    """A leg may name its account by AccountSpec (a funding, a payout): the posting finds it or
    creates it, once per code and currency, and a repeat of the reference changes nothing."""
    milestone = MilestoneFactory()
    gateway = ledger.gateway_account("sandbox", "usd")  # exists already; escrow does not
    escrow = ledger.escrow_spec(milestone)

    with transaction.atomic():
        first = ledger.post_entry(
            reference="spec-1",
            kind="fund",
            currency="usd",
            legs=[
                ledger.debit(ledger.gateway_spec("sandbox", "usd"), 600),
                ledger.credit(escrow, 600),
            ],
            milestone=milestone,
        )
        second = ledger.post_entry(
            reference="spec-2",
            kind="fund",
            currency="usd",
            legs=[ledger.debit(gateway, 50), ledger.credit(escrow, 50)],  # one of each kind
        )
        repeat = ledger.post_entry(
            reference="spec-1",
            kind="fund",
            currency="usd",
            legs=[
                ledger.debit(ledger.gateway_spec("sandbox", "usd"), 600),
                ledger.credit(escrow, 600),
            ],
        )

    created = LedgerAccount.objects.get(code=escrow.code)
    assert first.created and second.created and not repeat.created
    assert repeat.entry.pk == first.entry.pk and first.entry.milestone_id == milestone.pk
    assert (created.kind, created.milestone_id, created.is_restricted) == (
        "escrow",
        milestone.pk,
        True,
    )
    assert LedgerAccount.objects.filter(code__in=[escrow.code, gateway.code]).count() == 2
    assert entry_rows(first.entry) == [(escrow.code, -600), (gateway.code, 600)]
    assert ledger.balance(created) == 650 and ledger.balance(gateway) == 650
    assert JournalEntry.objects.count() == 2


def test_an_overdraft_to_a_spec_account_is_refused_and_writes_no_entry():
    milestone = MilestoneFactory()
    legs = [
        ledger.debit(ledger.escrow_spec(milestone), 10),
        ledger.credit(ledger.gateway_spec("sandbox", "usd"), 10),
    ]

    with pytest.raises(InsufficientFunds), transaction.atomic():
        ledger.post_entry(reference="spec-overdraft", kind="refund", currency="usd", legs=legs)

    assert not JournalEntry.objects.exists() and not Posting.objects.exists()


def test_a_spec_in_another_currency_is_refused():
    milestone = MilestoneFactory()
    legs = [
        ledger.debit(ledger.gateway_spec("sandbox", "eur"), 10),
        ledger.credit(ledger.escrow_spec(milestone), 10),
    ]

    with pytest.raises(UnbalancedEntry), transaction.atomic():
        ledger.post_entry(reference="spec-mixed", kind="fund", currency="usd", legs=legs)

    assert not JournalEntry.objects.exists() and not LedgerAccount.objects.exists()


@requires_postgres
@pytest.mark.postgres
def test_on_postgresql_a_funding_is_one_round_trip_accounts_included():
    """post_funding names its accounts by spec, so on PostgreSQL escrow_post_entry_to()
    (migration 0008) finds the gateway account, creates the milestone's escrow account and
    writes the entry in the one call; before, the look-up and the creation were two more
    round trips (docs/PERFORMANCE.md). The rows are those of the portable path: the same
    postings and balances as a funding posted to accounts resolved beforehand."""
    by_spec, by_account = MilestoneFactory(amount=900), MilestoneFactory(amount=900)
    ledger_gateway = ledger.gateway_account("sandbox", "usd")

    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        posted = ledger.post_funding(
            milestone=by_spec, amount=900, provider="sandbox", reference="p-spec"
        )
    with transaction.atomic():
        gateway, escrow = ledger.accounts(
            ledger.gateway_spec("sandbox", "usd"), ledger.escrow_spec(by_account)
        )
        resolved = ledger.post_entry(
            reference="fund:p-account",
            kind="fund",
            currency="usd",
            legs=[ledger.debit(gateway, 900), ledger.credit(escrow, 900)],
            milestone=by_account,
            party_id=by_account.project.homeowner_id,
        )

    assert [q["sql"].split("(")[0] for q in queries.captured_queries] == [
        "SELECT escrow_post_entry_to"
    ]
    spec_escrow = LedgerAccount.objects.get(code=f"escrow:milestone:{by_spec.pk}")
    assert entry_rows(posted.entry) == [(spec_escrow.code, -900), ("gateway:sandbox", 900)]
    assert [(p.amount, p.account.kind) for p in posted.entry.postings.order_by("amount")] == [
        (p.amount, p.account.kind) for p in resolved.entry.postings.order_by("amount")
    ]
    fields = ["kind", "currency", "amount"]
    assert [getattr(posted.entry, f) for f in fields] == [
        getattr(resolved.entry, f) for f in fields
    ]
    assert (posted.entry.project_id, posted.entry.party_id) == (
        by_spec.project_id,
        by_spec.project.homeowner_id,
    )
    assert ledger.balance(spec_escrow) == ledger.balance(escrow) == 900
    assert ledger.balance(ledger_gateway) == 1800


@requires_postgres
@pytest.mark.postgres
def test_on_postgresql_the_ledger_calls_are_prepared_statements():
    """The ledger's function calls bind on the server, so psycopg prepares them after
    DB_PREPARE_THRESHOLD (5) runs on a connection and PostgreSQL stops parsing each one."""
    milestones = MilestoneFactory.create_batch(7, amount=100)

    with transaction.atomic():
        for milestone in milestones:
            ledger.post_funding(
                milestone=milestone,
                amount=100,
                provider="sandbox",
                reference=f"prep-{milestone.pk}",
            )
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_prepared_statements "
                "WHERE statement LIKE 'SELECT escrow_post_entry_to(%%'"
            )
            prepared = cursor.fetchone()[0]

    assert prepared == 1
    assert ledger.balance(ledger.gateway_account("sandbox", "usd")) == 700


def funded_milestone(amount: int = 1_000) -> Milestone:
    milestone = MilestoneFactory(amount=amount)
    fund(milestone)
    return Milestone.objects.select_related("project").get(pk=milestone.pk)


def test_a_settlement_empties_escrow_and_is_refused_when_the_ledger_holds_something_else():
    """post_settlement moves the milestone's held_amount out and requires the escrow account to
    end at zero. With 5 more in escrow than the milestone says (a wrong entry elsewhere) the
    release is refused and nothing is posted, rather than leaving money behind."""
    clean, tampered = funded_milestone(), funded_milestone()
    with transaction.atomic():
        ledger.post_entry(
            reference="stray",
            kind="adjustment",
            currency="usd",
            legs=[
                ledger.debit(ledger.gateway_spec("sandbox", "usd"), 5),
                ledger.credit(ledger.escrow_spec(tampered), 5),
            ],
        )

    with transaction.atomic():
        posted = ledger.post_settlement(
            milestone=clean, release_amount=1_000, fee=50, kind="release", reference="rel-clean"
        )
    with pytest.raises(InsufficientFunds, match="must empty"), transaction.atomic():
        ledger.post_settlement(
            milestone=tampered, release_amount=1_000, fee=50, kind="release", reference="rel-bad"
        )

    contractor = clean.project.contractor_id
    assert entry_rows(posted.entry) == sorted(
        [
            (f"escrow:milestone:{clean.pk}", 1_000),
            (f"payable:user:{contractor}", -950),
            ("revenue:fees", -50),
        ]
    )
    assert ledger.escrow_balance_of(clean.pk) == 0
    assert ledger.escrow_balance_of(tampered.pk) == 1_005
    assert not JournalEntry.objects.filter(reference="rel-bad").exists()


def test_only_a_restricted_leg_can_be_required_to_end_at_zero():
    milestone = MilestoneFactory()
    gateway, escrow = ledger.gateway_spec("sandbox", "usd"), ledger.escrow_spec(milestone)
    other = ledger.escrow_spec(MilestoneFactory())

    for empties in [(gateway,), (other,)]:
        with pytest.raises(UnbalancedEntry), transaction.atomic():
            ledger.post_entry(
                reference="empties",
                kind="fund",
                currency="usd",
                legs=[ledger.debit(gateway, 5), ledger.credit(escrow, 5)],
                empties=empties,
            )

    assert not JournalEntry.objects.exists()


@requires_postgres
@pytest.mark.postgres
def test_on_postgresql_a_settlement_is_one_round_trip():
    """A release names escrow, payable and revenue by spec and checks that escrow ends at zero
    inside escrow_post_entry_to(): one call where it was a look-up and a call."""
    milestone = funded_milestone(2_000)

    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        posted = ledger.post_settlement(
            milestone=milestone, release_amount=1_500, fee=75, kind="split", reference="split-1"
        )

    assert [q["sql"].split("(")[0] for q in queries.captured_queries] == [
        "SELECT escrow_post_entry_to"
    ]
    assert entry_rows(posted.entry) == sorted(
        [
            (f"escrow:milestone:{milestone.pk}", 2_000),
            (f"payable:user:{milestone.project.contractor_id}", -1_425),
            ("revenue:fees", -75),
            ("gateway:sandbox", -500),
        ]
    )
    assert ledger.escrow_balance_of(milestone.pk) == 0


def test_empties_works_with_resolved_accounts_too():
    """The zero-after check is the same whether the legs name LedgerAccounts or specs."""
    milestone = funded_milestone(300)
    escrow = ledger.escrow_account(milestone)
    gateway = ledger.gateway_account("sandbox", "usd")

    with pytest.raises(InsufficientFunds), transaction.atomic():
        ledger.post_entry(
            reference="partly",
            kind="refund",
            currency="usd",
            legs=[ledger.debit(escrow, 200), ledger.credit(gateway, 200)],
            empties=(escrow,),
        )
    with transaction.atomic():
        posted = ledger.post_entry(
            reference="wholly",
            kind="refund",
            currency="usd",
            legs=[ledger.debit(escrow, 300), ledger.credit(gateway, 300)],
            empties=(escrow,),
        )

    assert posted.created and ledger.escrow_balance_of(milestone.pk) == 0
    assert not JournalEntry.objects.filter(reference="partly").exists()


def test_a_repeated_settlement_returns_the_first_entry_and_changes_nothing():
    """Idempotent on the reference like any entry, although its escrow is empty by then."""
    milestone = funded_milestone(400)

    with transaction.atomic():
        first = ledger.post_settlement(
            milestone=milestone, release_amount=400, fee=20, kind="release", reference="rel-r"
        )
    with transaction.atomic():
        again = ledger.post_settlement(
            milestone=milestone, release_amount=400, fee=20, kind="release", reference="rel-r"
        )

    assert first.created and not again.created and again.entry.pk == first.entry.pk
    assert JournalEntry.objects.filter(kind="release").count() == 1
    assert ledger.escrow_balance_of(milestone.pk) == 0


@pytest.mark.parametrize(
    "values, literal",
    [
        ([], "{}"),
        ([1, -2, 0, None], "{1,-2,0,NULL}"),
        ([True, False, None], "{t,f,NULL}"),
        (["escrow:milestone:7", "", "NULL"], '{"escrow:milestone:7","","NULL"}'),
        (['a"b', "c\\d", "{x, y}"], '{"a\\"b","c\\\\d","{x, y}"}'),
        ([LedgerAccount.Kind.ESCROW], '{"escrow"}'),
    ],
)
def test_array_literals_quote_every_string_and_spell_nulls_and_booleans(values, literal):
    """The ledger's function calls get their arrays as PostgreSQL array literals (one text
    parameter each, instead of psycopg dumping every element in Python). Strings are always
    quoted with backslash and double quote escaped, so a code such as 'NULL' or one with a
    comma or brace stays a string."""
    assert ledger._pg_array(values) == literal


@pytest.mark.parametrize("value", [1.5, b"x", object()])
def test_array_literals_refuse_what_they_cannot_spell(value):
    with pytest.raises(TypeError):
        ledger._pg_array([value])


_PG_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
_BIGINT = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@requires_postgres
@pytest.mark.postgres
@settings(max_examples=150, deadline=None, database=None)
@given(
    texts=st.lists(st.none() | _PG_TEXT, max_size=6),
    numbers=st.lists(st.none() | _BIGINT, max_size=6),
    flags=st.lists(st.none() | st.booleans(), max_size=6),
)
def test_on_postgresql_array_literals_read_back_as_the_same_values(texts, numbers, flags):
    """Whatever text, bigint or boolean values (NULLs included) the ledger sends, PostgreSQL's
    array_in reads back exactly the list that was sent: no element split, merged, unquoted or
    turned into NULL."""
    with ledger._prepared_cursor() as cursor:
        cursor.execute(
            "SELECT %s::text[], %s::bigint[], %s::boolean[]",
            [ledger._pg_array(texts), ledger._pg_array(numbers), ledger._pg_array(flags)],
        )
        assert cursor.fetchone() == (texts, numbers, flags)
