"""Races on PostgreSQL with real threads, each on its own database connection.

What these prove: the row locks (project → milestone → ledger accounts by id), the unique entry
references and the CHECK on restricted balances keep the ledger exact when the same milestone,
the same contractor or the same shared accounts are hit at once; nothing deadlocks; a refused
overdraft writes nothing. Every thread closes its connection when it ends.
"""

import io
import random
import threading
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
from django.core.management import call_command
from django.db import connections, transaction
from django.db.models import Sum

from common.errors import IllegalTransition
from escrow import invariants, ledger, money, services
from escrow.exceptions import InsufficientFunds
from escrow.models import JournalEntry, LedgerAccount, Milestone, Posting
from realtime.events import emit
from realtime.models import Event
from tests.conftest import Party, requires_postgres
from tests.escrow.factories import MilestoneFactory, fund, submitted
from tests.factories import ContractorFactory, HomeownerFactory, OperatorFactory

pytestmark = [
    requires_postgres,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]

Status = Milestone.Status
THREAD_TIMEOUT = 120


def run_in_threads(functions: list[Callable[[], object]]) -> list[tuple[object, BaseException]]:
    """Run each function in its own thread, all released at once by a barrier; return
    (result, exception) per function in order. Each thread closes its DB connections."""
    barrier = threading.Barrier(len(functions))
    outcomes: list[tuple[object, BaseException | None]] = [(None, None)] * len(functions)

    def runner(index: int, function: Callable[[], object]) -> None:
        try:
            barrier.wait(timeout=30)
            outcomes[index] = (function(), None)
        except BaseException as exc:
            outcomes[index] = (None, exc)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=runner, args=(index, function), daemon=True)
        for index, function in enumerate(functions)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a thread hung (deadlock?)"
    return outcomes


def check_ledger_output() -> str:
    out = io.StringIO()
    call_command("check_ledger", stdout=out)  # exits 1 (SystemExit) on any violation
    return out.getvalue()


def balance_of(code: str, currency: str = "usd") -> int:
    return ledger.balance(LedgerAccount.objects.get(code=code, currency=currency))


def payable_code(user) -> str:
    return f"payable:user:{user.pk}"


def posted_to(code: str, *, kind: str, currency: str = "usd") -> int:
    """Signed sum of the postings of entries of `kind` into account `code`. Payments starts a
    payout after each release commits, so a payable's balance moves on; what the release
    itself credited is read from its postings."""
    total = Posting.objects.filter(
        account__code=code, account__currency=currency, entry__kind=kind
    ).aggregate(total=Sum("amount"))["total"]
    return total or 0


# --- (a) one milestone, 20 approvals ----------------------------------------------------------


def test_twenty_parallel_approvals_release_once():
    milestone = submitted(MilestoneFactory(amount=123_457))
    project = milestone.project
    fee = money.platform_fee(milestone.amount)

    outcomes = run_in_threads(
        [
            lambda: services.milestone_approve(milestone_id=milestone.pk, actor=project.homeowner)
            for _ in range(20)
        ]
    )

    assert [exc for _, exc in outcomes] == [None] * 20  # the 19 late ones are idempotent
    assert {result.status for result, _ in outcomes} == {Status.RELEASED}
    releases = JournalEntry.objects.filter(milestone=milestone, kind=JournalEntry.Kind.RELEASE)
    assert releases.count() == 1
    released_events = Event.objects.filter(
        type="milestone.released", aggregate_type="milestone", aggregate_id=str(milestone.pk)
    )
    assert released_events.count() == 1
    payable = payable_code(project.contractor)
    assert -posted_to(payable, kind=JournalEntry.Kind.RELEASE) == milestone.amount - fee
    assert Posting.objects.filter(account__code=payable, amount__lt=0).count() == 1
    assert balance_of("revenue:fees") == fee
    assert ledger.escrow_balance_of(milestone.pk) == 0
    assert "ledger ok" in check_ledger_output()


# --- (b) refund racing approval ---------------------------------------------------------------


def test_refund_racing_approval_exactly_one_wins_every_round():
    operator = OperatorFactory()
    rounds = 12
    winners = Counter()
    for _ in range(rounds):
        milestone = submitted(MilestoneFactory(amount=random.randint(1, money.MAX_AMOUNT)))
        homeowner = milestone.project.homeowner
        settled_before = JournalEntry.objects.filter(
            kind__in=[JournalEntry.Kind.RELEASE, JournalEntry.Kind.REFUND]
        ).count()

        approve, refund = run_in_threads(
            [
                lambda m=milestone, h=homeowner: services.milestone_approve(
                    milestone_id=m.pk, actor=h
                ),
                lambda m=milestone: services.milestone_refund(milestone_id=m.pk, actor=operator),
            ]
        )

        errors = [exc for _, exc in (approve, refund) if exc is not None]
        assert len(errors) == 1 and isinstance(errors[0], IllegalTransition), errors
        final = Milestone.objects.get(pk=milestone.pk).status
        expected = Status.RELEASED if approve[1] is None else Status.REFUNDED
        assert final == expected
        winners[final] += 1
        settlement = JournalEntry.objects.filter(milestone=milestone).exclude(
            kind=JournalEntry.Kind.FUND
        )
        assert [entry.kind for entry in settlement] == [
            JournalEntry.Kind.RELEASE if final == Status.RELEASED else JournalEntry.Kind.REFUND
        ]
        settled_kinds = [JournalEntry.Kind.RELEASE, JournalEntry.Kind.REFUND]
        assert JournalEntry.objects.filter(kind__in=settled_kinds).count() == settled_before + 1
        assert ledger.escrow_balance_of(milestone.pk) == 0
        assert invariants.violations() == []
    assert sum(winners.values()) == rounds
    assert "ledger ok" in check_ledger_output()


# --- (c) parallel HTTP through a real server --------------------------------------------------


class Http:
    """A party talking to the live server over loopback HTTP with its Bearer key."""

    def __init__(self, base_url: str, party: Party):
        self.user = party.user
        self.client = httpx.Client(
            base_url=f"{base_url}/api/v1",
            headers={"Authorization": f"Bearer {party.key}"},
            timeout=60,
        )

    def post(self, path: str, json: dict | None = None) -> httpx.Response:
        return self.client.post(path, json=json)


def fund_double(milestone_id: int, actor) -> str:
    """The funding payment's test double: what payments does in its two transactions."""
    from escrow.exceptions import ProjectNotActive

    try:
        with transaction.atomic():
            services.milestone_fund_start(milestone_id=milestone_id, actor=actor)
    except (IllegalTransition, ProjectNotActive):
        return "refused"
    with transaction.atomic():
        milestone = Milestone.objects.select_related("project").get(pk=milestone_id)
        services.milestone_funded(
            milestone_id=milestone_id,
            amount=milestone.amount,
            currency=milestone.project.currency,
            reference=f"http-test-payment-{milestone_id}",
            provider="sandbox",
        )
    return "funded"


SCRIPTS = {
    # name: steps of (who, action); "fund" is the payments test double.
    "inspect_then_approve": [
        ("homeowner", "fund"),
        ("contractor", "submit"),
        ("homeowner", "request-inspection"),
        ("homeowner", "approve"),
    ],
    "approve": [("homeowner", "fund"), ("contractor", "submit"), ("homeowner", "approve")],
    "refund_before_submit": [("homeowner", "fund"), ("homeowner", "refund")],
    "operator_refund_after_submit": [
        ("homeowner", "fund"),
        ("contractor", "submit"),
        ("operator", "refund"),
    ],
    "cancel": [("homeowner", "cancel")],
}
CHAOS_ACTIONS = [
    ("homeowner", "approve"),
    ("homeowner", "refund"),
    ("operator", "refund"),
    ("contractor", "submit"),
    ("homeowner", "request-inspection"),
    ("homeowner", "cancel"),
    ("homeowner", "fund"),
]


def test_parallel_http_mix_over_several_projects_keeps_the_ledger_exact(live_server):
    # Given four projects of two milestones each... created, and then signed, through HTTP
    contractor = Party(ContractorFactory())
    operator = Party(OperatorFactory())
    homeowners = [Party(HomeownerFactory()) for _ in range(4)]
    base = live_server.url
    http = {"contractor": Http(base, contractor), "operator": Http(base, operator)}
    projects = []
    for index, homeowner in enumerate(homeowners):
        response = Http(base, homeowner).post(
            "/projects",
            {
                "title": f"Kitchen {index}",
                "contractor": contractor.user.username,
                "currency": "usd",
                "milestones": [
                    {"title": "Demolition", "amount": 250_000 + index},
                    {"title": "Cabinets", "amount": 99_999 + index},
                ],
            },
        )
        assert response.status_code == 201, response.text
        projects.append((homeowner, response.json()))

    sign_calls = [
        lambda h=homeowner, p=project: Http(base, h).post(f"/projects/{p['id']}/sign")
        for homeowner, project in projects
    ] + [
        lambda p=project: Http(base, contractor).post(f"/projects/{p['id']}/sign")
        for _, project in projects
        for _repeat in range(2)  # a repeated signature is idempotent
    ]
    signed = run_in_threads(sign_calls)
    assert [(exc, result.status_code) for result, exc in signed] == [(None, 200)] * len(signed)

    # When every milestone runs a script in its own thread, while chaos threads fire random
    # conflicting actions at random milestones
    milestones = []  # (milestone id, homeowner party, script name)
    script_names = list(SCRIPTS)
    for index, (homeowner, project) in enumerate(projects):
        for offset, milestone in enumerate(project["milestones"]):
            name = script_names[(2 * index + offset) % len(script_names)]
            milestones.append((milestone["id"], homeowner, name))
    statuses: list[int] = []
    statuses_lock = threading.Lock()

    def act(who: str, action: str, milestone_id: int, homeowner: Party) -> str | int:
        if action == "fund":
            return fund_double(milestone_id, homeowner.user)
        client = Http(base, homeowner) if who == "homeowner" else http[who]
        status = client.post(f"/milestones/{milestone_id}/{action}").status_code
        with statuses_lock:
            statuses.append(status)
        return status

    def script(milestone_id: int, homeowner: Party, name: str) -> list:
        done = []
        for who, action in SCRIPTS[name]:
            outcome = act(who, action, milestone_id, homeowner)
            done.append(outcome)
            if outcome not in (200, "funded"):
                break  # a chaos thread moved the milestone first; the rest is moot
        return done

    def chaos(seed: int) -> int:
        rng = random.Random(seed)
        for _ in range(12):
            milestone_id, homeowner, _ = rng.choice(milestones)
            who, action = rng.choice(CHAOS_ACTIONS)
            act(who, action, milestone_id, homeowner)
        return seed

    outcomes = run_in_threads(
        [lambda m=m, h=h, n=n: script(m, h, n) for m, h, n in milestones]
        + [lambda seed=seed: chaos(seed) for seed in range(4)]
    )

    # Then no request failed on the server, every refusal is a clean 409/403, and the ledger
    # check passes with escrow matching each milestone's state
    assert [exc for _, exc in outcomes] == [None] * len(outcomes)
    assert set(statuses) <= {200, 403, 409}, Counter(statuses)
    assert statuses.count(200) >= len(milestones) // 2  # the mix did real work
    assert "ledger ok" in check_ledger_output()
    final = Counter(Milestone.objects.values_list("status", flat=True))
    assert set(final) <= {
        Status.PENDING,
        Status.FUNDED,
        Status.SUBMITTED,
        Status.INSPECTION,
        Status.RELEASED,
        Status.REFUNDED,
        Status.CANCELLED,
    }
    released = Milestone.objects.filter(status=Status.RELEASED)
    credited_by_releases = posted_to(payable_code(contractor.user), kind=JournalEntry.Kind.RELEASE)
    assert -credited_by_releases == sum(m.amount - money.platform_fee(m.amount) for m in released)
    for milestone in Milestone.objects.all():
        settlements = JournalEntry.objects.filter(milestone=milestone).exclude(
            kind=JournalEntry.Kind.FUND
        )
        settled = milestone.status in (Status.RELEASED, Status.REFUNDED)
        assert settlements.count() == (1 if settled else 0)


# --- (d) shared accounts under load: no deadlock, exact sums ----------------------------------


def test_parallel_releases_and_postings_into_shared_accounts_do_not_deadlock():
    # Given one contractor with twelve submitted milestones in twelve projects
    contractor = ContractorFactory()
    milestones = [
        submitted(MilestoneFactory(project__contractor=contractor, amount=10_000 + 137 * i))
        for i in range(12)
    ]
    gateway = ledger.gateway_account("sandbox", "usd")
    revenue = ledger.revenue_account("usd")
    payable = ledger.payable_account(contractor.pk, "usd")
    revenue_before = ledger.balance(revenue)

    def release(milestone: Milestone):
        return services.milestone_approve(
            milestone_id=milestone.pk, actor=milestone.project.homeowner
        )

    def adjustments(worker: int) -> int:
        # Entries touching gateway, revenue and the same payable, legs given in a different
        # order each time: post_entry must lock the accounts in id order whatever the order.
        rng = random.Random(worker)
        for n in range(15):
            legs = [
                ledger.debit(gateway, 7),
                ledger.credit(revenue, 5),
                ledger.credit(payable, 2),
            ]
            rng.shuffle(legs)
            with transaction.atomic():
                ledger.post_entry(
                    reference=f"adjust:{worker}:{n}",
                    kind=JournalEntry.Kind.ADJUSTMENT,
                    currency="usd",
                    legs=legs,
                )
        return worker

    # When the releases and twelve posting workers run at once
    outcomes = run_in_threads(
        [lambda m=m: release(m) for m in milestones]
        + [lambda w=w: adjustments(w) for w in range(12)]
    )

    # Then everything completed, each flow moved exactly its amounts through the shared
    # accounts, and every stored balance is the sum of its postings
    assert [exc for _, exc in outcomes] == [None] * len(outcomes)
    fees = sum(money.platform_fee(m.amount) for m in milestones)
    payouts = sum(m.amount - money.platform_fee(m.amount) for m in milestones)
    adjustments_posted = 12 * 15
    adjustment = JournalEntry.Kind.ADJUSTMENT
    assert JournalEntry.objects.filter(kind=adjustment).count() == adjustments_posted
    assert posted_to("gateway:sandbox", kind=adjustment) == 7 * adjustments_posted
    assert -posted_to("revenue:fees", kind=adjustment) == 5 * adjustments_posted
    assert -posted_to(payable.code, kind=adjustment) == 2 * adjustments_posted
    assert -posted_to(payable.code, kind=JournalEntry.Kind.RELEASE) == payouts
    assert ledger.balance(revenue) == revenue_before + fees + 5 * adjustments_posted
    assert Milestone.objects.filter(status=Status.RELEASED).count() == 12
    assert invariants.violations() == []


def test_posting_before_emitting_does_not_deadlock_with_releases():
    """A payout posts first and emits after; a release emits first (its transition) and posts
    after. Both meet on the contractor's payable. With the old global event-order lock (held
    from the first emit to commit) the two orders deadlocked; emit now takes no lock (events
    are numbered after commit by realtime's sequencer), so only the account rows are shared,
    and those are always locked in ascending id order."""
    contractor = ContractorFactory()
    milestones = [
        submitted(MilestoneFactory(project__contractor=contractor, amount=20_000 + i))
        for i in range(8)
    ]
    payable = ledger.payable_account(contractor.pk, "usd")
    with transaction.atomic():
        ledger.post_entry(
            reference="seed-payouts",
            kind=JournalEntry.Kind.ADJUSTMENT,
            currency="usd",
            legs=[
                ledger.debit(ledger.gateway_account("sandbox", "usd"), 8_000),
                ledger.credit(payable, 8_000),
            ],
        )

    def release(milestone: Milestone):
        return services.milestone_approve(
            milestone_id=milestone.pk, actor=milestone.project.homeowner
        )

    def payout_like(n: int):
        with transaction.atomic():
            ledger.post_payout_started(
                payout_reference=f"race-{n}", user_id=contractor.pk, amount=1_000, currency="usd"
            )
            emit(
                "payout.started",
                {"n": n},
                aggregate=("payout", f"race-{n}"),
                audience=[contractor.pk],
                channels=[f"user.{contractor.pk}.payouts"],
            )
        return n

    outcomes = run_in_threads(
        [lambda m=m: release(m) for m in milestones]
        + [lambda n=n: payout_like(n) for n in range(8)]
    )

    assert [exc for _, exc in outcomes] == [None] * len(outcomes)
    assert JournalEntry.objects.filter(reference__startswith="payout:race-").count() == 8
    assert (
        Milestone.objects.filter(pk__in=[m.pk for m in milestones], status=Status.RELEASED).count()
        == 8
    )
    assert invariants.violations() == []


# --- (e) a parallel overdraft is refused by the database --------------------------------------


def test_parallel_overdraw_of_a_payable_is_refused_and_writes_nothing():
    # Given a contractor whose payable holds 47_500
    contractor = ContractorFactory()
    held = 47_500
    with transaction.atomic():
        ledger.post_entry(
            reference="seed-payable",
            kind=JournalEntry.Kind.ADJUSTMENT,
            currency="usd",
            legs=[
                ledger.debit(ledger.gateway_account("sandbox", "usd"), held),
                ledger.credit(ledger.payable_account(contractor.pk, "usd"), held),
            ],
        )
    postings_before = Posting.objects.count()

    def pay_out(n: int):
        with transaction.atomic():
            return ledger.post_payout_started(
                payout_reference=f"overdraw-{n}", user_id=contractor.pk, amount=held, currency="usd"
            )

    # When ten payouts of the whole balance race
    outcomes = run_in_threads([lambda n=n: pay_out(n) for n in range(10)])

    # Then exactly one is posted; the nine others hit the CHECK and left no trace
    succeeded = [result for result, exc in outcomes if exc is None]
    refused = [exc for _, exc in outcomes if exc is not None]
    assert len(succeeded) == 1
    assert len(refused) == 9 and all(isinstance(exc, InsufficientFunds) for exc in refused)
    assert balance_of(payable_code(contractor)) == 0
    assert balance_of("payout:in_transit") == held
    assert JournalEntry.objects.filter(reference__startswith="payout:overdraw-").count() == 1
    assert Posting.objects.count() == postings_before + 2
    assert invariants.violations() == []


def test_parallel_overdraw_of_an_escrow_account_is_refused_and_writes_nothing():
    # Given a funded milestone, and raw ledger code (bypassing the milestone lock) trying to
    # take its escrow out twice at once
    milestone = fund(MilestoneFactory(amount=70_000))
    escrow = ledger.escrow_account(milestone)
    gateway = ledger.gateway_account("sandbox", "usd")
    entries_before = JournalEntry.objects.count()

    def drain(n: int):
        with transaction.atomic():
            return ledger.post_entry(
                reference=f"drain:{milestone.pk}:{n}",
                kind=JournalEntry.Kind.ADJUSTMENT,
                currency="usd",
                legs=[ledger.debit(escrow, 70_000), ledger.credit(gateway, 70_000)],
            )

    outcomes = run_in_threads([lambda n=n: drain(n) for n in range(6)])

    refused = [exc for _, exc in outcomes if exc is not None]
    assert len(refused) == 5 and all(isinstance(exc, InsufficientFunds) for exc in refused)
    assert ledger.balance(escrow) == 0
    assert JournalEntry.objects.count() == entries_before + 1
    assert not LedgerAccount.objects.filter(is_restricted=True, balance__lt=0).exists()


def test_two_postings_creating_the_same_accounts_at_once_both_land_on_one_account():
    """escrow_post_entry_to() (migration 0008) creates a missing account with INSERT .. ON
    CONFLICT DO NOTHING. Here the first transaction has created gateway:sandbox and
    revenue:fees in chf but not committed; the second, creating the same accounts, waits for
    it, finds the rows once they are committed and posts to them: one account each, both
    entries counted, nothing refused."""
    first_posted, release_first = threading.Event(), threading.Event()

    def post(reference: str, amount: int, hold: bool) -> int:
        with transaction.atomic():
            posted = ledger.post_entry(
                reference=reference,
                kind=JournalEntry.Kind.ADJUSTMENT,
                currency="chf",
                legs=[
                    ledger.debit(ledger.gateway_spec("sandbox", "chf"), amount),
                    ledger.credit(ledger.revenue_spec("chf"), amount),
                ],
            )
            if hold:
                first_posted.set()
                assert release_first.wait(THREAD_TIMEOUT)
        return posted.entry.pk

    def second() -> int:
        assert first_posted.wait(THREAD_TIMEOUT)
        return post("race-2", 250, hold=False)

    def let_first_commit_once_second_waits() -> None:
        assert first_posted.wait(THREAD_TIMEOUT)
        with connections["default"].cursor() as cursor:
            for _ in range(400):  # up to 20 s
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
                if cursor.fetchone()[0]:
                    break
                threading.Event().wait(0.05)
            else:
                raise AssertionError("the second posting never waited for the first")
        release_first.set()

    outcomes = run_in_threads(
        [lambda: post("race-1", 100, hold=True), second, let_first_commit_once_second_waits]
    )

    assert [error for _, error in outcomes] == [None, None, None]
    assert LedgerAccount.objects.filter(currency="chf").count() == 2
    assert balance_of("gateway:sandbox", "chf") == 350 and balance_of("revenue:fees", "chf") == 350
    assert JournalEntry.objects.filter(currency="chf").count() == 2
    assert "ledger ok" in check_ledger_output()
