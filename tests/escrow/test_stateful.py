"""Random sequences of every escrow operation over several projects, with the ledger's
invariants checked after every single step.

Hypothesis drives sign, fund start, funding succeeded / failed (the payments test double, in
its own transaction as payments does), submit, inspect, approve, refund (homeowner and
operator), cancel, freeze, dispute settlement with random split amounts, and the auto-release
with the clock moved past the review window, by the right and the wrong people. Domain refusals
(IllegalTransition, NotAllowed, ...) are expected and must change nothing; any other exception
fails. After each step:

- escrow.invariants.violations() == [] (what `manage.py check_ledger` checks);
- on PostgreSQL the deferred balanced-entry triggers are fired too (SET CONSTRAINTS IMMEDIATE);
- every status change is an edge of Milestone.TRANSITIONS, and each milestone's status is
  reachable from the one seen before the step;
- money is conserved per currency: gateway (+ gateway fees) == escrow + payable + in transit +
  revenue;
- every release or split: fee + payout == released amount, fee is the platform fee of the
  released amount, and escrow − released goes back to the gateway.
"""

import uuid
from collections import defaultdict
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from common.errors import IllegalTransition, NotFound
from escrow import invariants, ledger, money, services
from escrow.exceptions import FundingMismatch, InsufficientFunds, NotAllowed, ProjectNotActive
from escrow.models import JournalEntry, LedgerAccount, Milestone, Posting, Project
from realtime.models import Event
from tests.factories import ContractorFactory, HomeownerFactory, OperatorFactory

pytestmark = pytest.mark.django_db

Status = Milestone.Status
Kind = LedgerAccount.Kind
# Refusals a caller can get in normal use. NotAllowed and the *NotFound errors subclass
# NotFound. InsufficientFunds is deliberately absent: the services must never attempt an
# overdraft, so meeting one is a bug.
EXPECTED = (
    IllegalTransition,
    NotAllowed,
    NotFound,
    ProjectNotActive,
    FundingMismatch,
    InsufficientFunds,
)
CURRENCIES = ["usd", "jpy", "kwd"]  # two, zero and three decimals
PICK = st.integers(min_value=0, max_value=10_000)
DICE = st.integers(min_value=0, max_value=3)


def reachable(source: str, target: str) -> bool:
    seen, frontier = {source}, [source]
    while frontier:
        for following in Milestone.TRANSITIONS[frontier.pop()]:
            if following not in seen:
                seen.add(following)
                frontier.append(following)
    return target in seen


class EscrowMachine(RuleBasedStateMachine):
    people: dict  # set by the test: users shared by every example

    def __init__(self):
        super().__init__()
        self.project_ids: list[int] = []
        self.milestone_ids: list[int] = []
        self.payments: list[tuple[int, str]] = []  # (milestone id, funding reference)
        self.payment_count = 0
        self.statuses: dict[int, str] = {}
        self.holds: list[tuple[int, str, int]] = []  # pending refunds: (milestone, ref, amount)
        self.last_event_id = Event.objects.aggregate(last=Max("id"))["last"] or 0
        self.last_entry_id = JournalEntry.objects.aggregate(last=Max("id"))["last"] or 0

    # --- helpers ------------------------------------------------------------------------------

    def snapshot(self) -> tuple:
        return (
            dict(Milestone.objects.values_list("pk", "status")),
            dict(Project.objects.values_list("pk", "status")),
            JournalEntry.objects.count(),
            Posting.objects.count(),
            Event.objects.count(),
            sorted(ledger.balances_of(LedgerAccount.objects.values_list("pk", flat=True)).items()),
        )

    def attempt(self, operation, **kwargs):
        """Run one operation; an expected refusal must leave everything as it was."""
        before = self.snapshot()
        try:
            return operation(**kwargs)
        except EXPECTED:
            assert self.snapshot() == before, f"{operation.__name__} refused but changed data"
            return None

    def milestone(self, pick: int) -> Milestone:
        milestone_id = self.milestone_ids[pick % len(self.milestone_ids)]
        return Milestone.objects.select_related("project").get(pk=milestone_id)

    def project(self, pick: int) -> Project:
        return Project.objects.get(pk=self.project_ids[pick % len(self.project_ids)])

    def actor(self, milestone: Milestone, who: str):
        project = milestone.project
        return {
            "homeowner": project.homeowner,
            "contractor": project.contractor,
            "operator": self.people["operator"],
            "stranger": self.people["stranger"],
        }[who]

    # --- setup --------------------------------------------------------------------------------

    @initialize(data=st.data())
    def create_projects(self, data):
        for index in range(3):
            amounts = data.draw(
                st.lists(st.integers(1, money.MAX_AMOUNT), min_size=1, max_size=2), label="amounts"
            )
            project = services.project_create(
                homeowner=self.people["homeowners"][index % 2],
                title=f"Project {index}",
                contractor_username=self.people["contractors"][index % 2].username,
                currency=data.draw(st.sampled_from(CURRENCIES), label="currency"),
                milestones=[{"title": f"M{n}", "amount": a} for n, a in enumerate(amounts)],
            )
            self.project_ids.append(project.pk)
            for milestone in project.milestones.order_by("pk"):
                self.milestone_ids.append(milestone.pk)
                self.statuses[milestone.pk] = milestone.status
            if data.draw(st.integers(0, 3), label="signed at once (unless 0)"):
                for party in (project.homeowner, project.contractor):
                    services.project_sign(project_id=project.pk, actor=party)
        # Start each milestone somewhere along its way, so that the random (often wrong) moves
        # below meet every state from the first step.
        for pick in range(len(self.milestone_ids)):
            for _ in range(data.draw(st.integers(0, 7), label="head start")):
                self.advance(pick, data.draw(st.booleans(), label="choice"))

    # --- rules --------------------------------------------------------------------------------

    @rule(pick=PICK, who=st.sampled_from(["homeowner", "contractor", "operator"]))
    def sign(self, pick, who):
        project = self.project(pick)
        actor = {
            "homeowner": project.homeowner,
            "contractor": project.contractor,
            "operator": self.people["operator"],
        }[who]
        self.attempt(services.project_sign, project_id=project.pk, actor=actor)

    @rule(pick=PICK, who=st.sampled_from(["homeowner", "homeowner", "contractor", "stranger"]))
    def fund_start(self, pick, who):
        milestone = self.milestone(pick)

        def start(**kwargs):
            with transaction.atomic():
                return services.milestone_fund_start(**kwargs)

        if self.attempt(start, milestone_id=milestone.pk, actor=self.actor(milestone, who)):
            self.payment_count += 1
            # Unique across examples (the database keeps earlier examples' entries).
            self.payments.append((milestone.pk, f"payment-{uuid.uuid4().hex}"))

    def advance(self, pick, choice):
        """The usual next step for the milestone's state, by the right person, so that random
        sequences reach every state instead of stalling at the first refusal."""
        milestone = self.milestone(pick)
        status = milestone.status
        if milestone.project.status == Project.Status.DRAFT:
            project_pick = self.project_ids.index(milestone.project_id)
            self.sign(project_pick, "homeowner" if choice else "contractor")
        elif status == Status.PENDING:
            self.fund_start(pick, "homeowner")
        elif status == Status.FUNDING:
            started = [n for n, (m, _) in enumerate(self.payments) if m == milestone.pk]
            self.funding_succeeded(started[-1], "sandbox" if choice else "stripe", exact=True)
        elif status == Status.FUNDED:
            self.submit(pick, "contractor")
        elif status == Status.SUBMITTED:
            (self.approve if choice else self.request_inspection)(pick, "homeowner")
        elif status == Status.INSPECTION:
            (self.approve if choice else self.freeze)(pick, "homeowner")
        elif status == Status.DISPUTED:
            self.settle_dispute(pick, milestone.pk % 1_000_001)

    # Registered several times: Hypothesis picks rules evenly, and progress should be common.
    advance_1 = rule(pick=PICK, choice=st.booleans())(advance)
    advance_2 = rule(pick=PICK, choice=st.booleans())(advance)
    advance_3 = rule(pick=PICK, choice=st.booleans())(advance)
    advance_4 = rule(pick=PICK, choice=st.booleans())(advance)
    advance_5 = rule(pick=PICK, choice=st.booleans())(advance)
    advance_6 = rule(pick=PICK, choice=st.booleans())(advance)

    @precondition(lambda self: self.payments)
    @rule(pick=PICK, provider=st.sampled_from(["sandbox", "stripe"]), exact=st.booleans())
    def funding_succeeded(self, pick, provider, exact):
        """Also a late success after a failure, a duplicate success, and a second payment's
        success after another one funded the milestone."""
        milestone_id, reference = self.payments[pick % len(self.payments)]
        milestone = Milestone.objects.select_related("project").get(pk=milestone_id)

        def succeeded(**kwargs):
            with transaction.atomic():
                return services.milestone_funded(**kwargs)

        self.attempt(
            succeeded,
            milestone_id=milestone_id,
            amount=milestone.amount if exact else milestone.amount + 1,
            currency=milestone.project.currency,
            reference=reference,
            provider=provider,
        )

    @precondition(lambda self: self.payments)
    @rule(pick=PICK)
    def funding_failed(self, pick):
        milestone_id, _ = self.payments[pick % len(self.payments)]

        def failed(**kwargs):
            with transaction.atomic():
                return services.milestone_funding_failed(**kwargs)

        self.attempt(failed, milestone_id=milestone_id)

    @rule(pick=PICK, who=st.sampled_from(["contractor", "contractor", "homeowner"]))
    def submit(self, pick, who):
        milestone = self.milestone(pick)
        self.attempt(
            services.milestone_submit, milestone_id=milestone.pk, actor=self.actor(milestone, who)
        )

    @rule(pick=PICK, who=st.sampled_from(["homeowner", "homeowner", "contractor"]))
    def request_inspection(self, pick, who):
        milestone = self.milestone(pick)
        self.attempt(
            services.milestone_request_inspection,
            milestone_id=milestone.pk,
            actor=self.actor(milestone, who),
        )

    @rule(pick=PICK, who=st.sampled_from(["homeowner", "homeowner", "contractor", "stranger"]))
    def approve(self, pick, who):
        milestone = self.milestone(pick)
        result = self.attempt(
            services.milestone_approve, milestone_id=milestone.pk, actor=self.actor(milestone, who)
        )
        assert result is None or result.status == Status.RELEASED

    @rule(pick=PICK, who=st.sampled_from(["homeowner", "operator", "contractor"]))
    def refund(self, pick, who):
        milestone = self.milestone(pick)
        result = self.attempt(
            services.milestone_refund, milestone_id=milestone.pk, actor=self.actor(milestone, who)
        )
        assert result is None or result.status == Status.REFUNDED

    @rule(pick=PICK, share=st.integers(0, 1_000))
    def refund_requested(self, pick, share):
        """An operator's refund of `share` thousandths of what is not yet promised (at least
        1): its hold is taken now, the gateway answers later (refund_answered)."""
        # Among the milestones that ever held money (the others are refused before any of
        # this is reached), so sequences with holds are common.
        funded = list(
            Milestone.objects.filter(pk__in=self.milestone_ids)
            .exclude(status__in=[Status.PENDING, Status.FUNDING, Status.CANCELLED])
            .select_related("project")
            .order_by("pk")
        )
        if not funded:
            return
        milestone = funded[pick % len(funded)]
        amount = max(1, milestone.held_amount * share // 1_000)
        reference = f"hold-{uuid.uuid4().hex[:12]}"

        def hold(**kwargs):
            from escrow.locks import milestone_for_update

            with transaction.atomic():
                locked = milestone_for_update(milestone_id=milestone.pk)
                services.milestone_refund_hold(locked, amount=amount, reference=reference)
            return True

        if self.attempt(hold):
            self.holds.append((milestone.pk, reference, amount))

    @rule(pick=PICK, succeeded=st.booleans())
    def refund_answered(self, pick, succeeded):
        """The gateway confirms or fails a pending refund: whatever the milestone went through
        meanwhile, it settles out of its hold or goes back to escrow, and never refuses."""
        if not self.holds:
            return
        milestone_id, reference, amount = self.holds.pop(pick % len(self.holds))
        provider = Milestone.objects.get(pk=milestone_id).funded_via
        with transaction.atomic():
            if succeeded:
                services.milestone_refund_partial(
                    milestone_id=milestone_id, amount=amount, reference=reference, provider=provider
                )
            else:
                services.milestone_refund_hold_return(
                    milestone_id=milestone_id, reference=reference
                )

    @rule(pick=PICK, who=st.sampled_from(["homeowner", "operator", "contractor"]))
    def cancel(self, pick, who):
        milestone = self.milestone(pick)
        result = self.attempt(
            services.milestone_cancel, milestone_id=milestone.pk, actor=self.actor(milestone, who)
        )
        assert result is None or result.status == Status.CANCELLED

    @rule(pick=PICK, who=st.sampled_from(["homeowner", "operator"]), dice=DICE)
    def cancel_project(self, pick, who, dice):
        if dice:
            return
        project = self.project(pick)
        actor = project.homeowner if who == "homeowner" else self.people["operator"]
        self.attempt(services.project_cancel, project_id=project.pk, actor=actor)

    @rule(pick=PICK, who=st.just("a dispute"))
    def freeze(self, pick, who):
        milestone = self.milestone(pick)
        result = self.attempt(
            services.milestone_freeze, milestone_id=milestone.pk, reason="homeowner disputes"
        )
        assert result is None or result.status == Status.DISPUTED

    @rule(
        pick=PICK,
        share=st.one_of(
            st.just(0), st.just(1_000_000), st.integers(0, 1_000_000), st.just(1_000_001)
        ),
    )
    def settle_dispute(self, pick, share):
        """Release `share` millionths of the escrow; 1_000_001 asks for more than is held."""
        milestone = self.milestone(pick)
        release_amount = milestone.amount * share // 1_000_000
        if share > 1_000_000:
            release_amount = milestone.amount + 1
        result = self.attempt(
            services.milestone_settle_dispute,
            milestone_id=milestone.pk,
            release_amount=release_amount,
            actor=self.people["operator"],
        )
        assert result is None or result.status in (Status.RELEASED, Status.REFUNDED, Status.SPLIT)

    @rule(move_clock=st.booleans())
    def auto_release(self, move_clock):
        now = timezone.now()
        if move_clock:
            now += django_settings.MILESTONE_REVIEW_WINDOW + timedelta(seconds=1)
        released = services.milestone_auto_release_due(now=now)
        if not move_clock:
            assert set(released).isdisjoint(self.milestone_ids)  # nobody's window is over yet
        for milestone_id in released:
            assert Milestone.objects.get(pk=milestone_id).status == Status.RELEASED

    # --- checked after every step ---------------------------------------------------------------

    @invariant()
    def ledger_invariants_hold(self):
        assert invariants.violations() == []
        if connection.vendor == "postgresql":
            # Fire the deferred balanced-entry triggers now: the test's transaction never
            # commits, so they would otherwise never run.
            with connection.cursor() as cursor:
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                cursor.execute("SET CONSTRAINTS ALL DEFERRED")

    @invariant()
    def statuses_move_only_along_the_table(self):
        events = Event.objects.filter(
            pk__gt=self.last_event_id, type="milestone.status_updated"
        ).order_by("pk")
        for event in events:
            previous, new = event.data["previous_status"], event.data["new_status"]
            assert new in Milestone.TRANSITIONS[previous], event.data
            milestone_id = event.data["milestone_id"]
            if milestone_id in self.statuses:
                assert previous == self.statuses[milestone_id], "status changed without an event"
                self.statuses[milestone_id] = new
        self.last_event_id = Event.objects.aggregate(last=Max("id"))["last"] or 0
        current = dict(
            Milestone.objects.filter(pk__in=self.milestone_ids).values_list("pk", "status")
        )
        for milestone_id, status in current.items():
            assert status == self.statuses[milestone_id]

    @invariant()
    def money_is_conserved_per_currency(self):
        totals = defaultdict(lambda: defaultdict(int))
        accounts = LedgerAccount.objects.values_list("pk", "currency", "kind")
        stored = ledger.balances_of(pk for pk, _, _ in accounts)
        for pk, currency, kind in accounts:
            totals[currency][kind] += stored[pk]
        for currency, by_kind in totals.items():
            assets = by_kind[Kind.GATEWAY] + by_kind[Kind.EXPENSE]
            owed = (
                by_kind[Kind.ESCROW]
                + by_kind[Kind.PAYABLE]
                + by_kind[Kind.PAYOUT_IN_TRANSIT]
                + by_kind[Kind.HOLD]
                + by_kind[Kind.REVENUE]
            )
            assert assets == owed, (currency, dict(by_kind))

    @invariant()
    def fee_plus_payout_is_the_released_amount(self):
        settlements = JournalEntry.objects.filter(
            pk__gt=self.last_entry_id,
            kind__in=[JournalEntry.Kind.RELEASE, JournalEntry.Kind.SPLIT, JournalEntry.Kind.REFUND],
        ).select_related("milestone")
        for entry in settlements:
            if entry.reference != f"{entry.kind}:{entry.milestone_id}":
                continue  # a partial refund settling out of its hold, not a settlement
            legs = defaultdict(int)
            for kind, amount in entry.postings.values_list("account__kind", "amount"):
                legs[kind] += amount
            held = legs[Kind.ESCROW]
            payout, fee, refunded = -legs[Kind.PAYABLE], -legs[Kind.REVENUE], -legs[Kind.GATEWAY]
            released = payout + fee
            # All that was not given back by partial refunds or promised to pending ones.
            assert 0 < held <= entry.milestone.amount
            assert fee == money.platform_fee(released)
            assert released + refunded == held
            if released:
                event = Event.objects.get(
                    type="milestone.released",
                    aggregate_id=str(entry.milestone_id),
                    aggregate_type="milestone",
                )
                assert event.data["released_amount"] == released
                assert event.data["fee"] + event.data["payout_amount"] == released
                assert event.data["fee"] == fee
        self.last_entry_id = JournalEntry.objects.aggregate(last=Max("id"))["last"] or 0


def test_random_operation_sequences_keep_every_ledger_invariant():
    EscrowMachine.people = {
        "homeowners": [HomeownerFactory(), HomeownerFactory()],
        "contractors": [ContractorFactory(), ContractorFactory()],
        "operator": OperatorFactory(),
        "stranger": HomeownerFactory(),
    }
    run_state_machine_as_test(
        EscrowMachine,
        settings=settings(
            max_examples=30,
            stateful_step_count=40,
            deadline=None,
            database=None,  # no .hypothesis/ directory in the tree
            print_blob=True,  # a failure prints the @reproduce_failure blob
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
