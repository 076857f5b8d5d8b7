"""Escrow services end to end (without HTTP): the milestone journey, its ledger entries and
events, idempotent repeats, who may do what, and the auto-release."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from common.errors import IllegalTransition
from escrow import invariants, ledger, reactions, selectors, services
from escrow.exceptions import FundingMismatch, MilestoneNotFound, NotAllowed, ProjectNotActive
from escrow.models import JournalEntry, LedgerAccount, Milestone, Project
from realtime.models import Event
from tests.escrow.factories import (
    DraftProjectFactory,
    MilestoneFactory,
    ProjectFactory,
    fund,
    submitted,
)
from tests.factories import ContractorFactory, HomeownerFactory, OperatorFactory

pytestmark = pytest.mark.django_db


def event_types():
    return list(Event.objects.order_by("id").values_list("type", flat=True))


def balances(currency="usd"):
    accounts = dict(LedgerAccount.objects.filter(currency=currency).values_list("pk", "code"))
    return {accounts[pk]: total for pk, total in ledger.balances_of(accounts).items()}


# --- Projects ---------------------------------------------------------------------------------


def test_create_makes_a_draft_with_ordered_pending_milestones():
    homeowner, contractor = HomeownerFactory(), ContractorFactory()

    project = services.project_create(
        homeowner=homeowner,
        title=" Bathroom ",
        contractor_username=contractor.username,
        currency="usd",
        milestones=[{"title": "Tiles", "amount": 1_000}, {"title": "Plumbing", "amount": 2_000}],
    )

    assert project.status == "draft" and project.title == "Bathroom"
    assert [(m.title, m.amount, m.status) for m in project.milestones.all()] == [
        ("Tiles", 1_000, "pending"),
        ("Plumbing", 2_000, "pending"),
    ]


def test_both_signatures_activate_the_project_and_emit_contract_signed_once():
    project = DraftProjectFactory()

    services.project_sign(project_id=project.pk, actor=project.homeowner)
    assert Project.objects.get(pk=project.pk).status == "draft"
    services.project_sign(project_id=project.pk, actor=project.contractor)
    services.project_sign(project_id=project.pk, actor=project.contractor)

    assert Project.objects.get(pk=project.pk).status == "active"
    assert event_types().count("contract.signed") == 1


def test_an_operator_cannot_sign_for_a_party():
    project = DraftProjectFactory()

    with pytest.raises(NotAllowed):
        services.project_sign(project_id=project.pk, actor=OperatorFactory())
    assert Project.objects.get(pk=project.pk).homeowner_signed_at is None


def test_a_stranger_gets_not_found_for_a_project():
    from escrow.exceptions import ProjectNotFound

    project = DraftProjectFactory()

    with pytest.raises(ProjectNotFound):
        services.project_sign(project_id=project.pk, actor=HomeownerFactory())


def test_funding_needs_both_signatures():
    milestone = MilestoneFactory(project=DraftProjectFactory())

    with pytest.raises(ProjectNotActive), transaction.atomic():
        services.milestone_fund_start(milestone_id=milestone.pk, actor=milestone.project.homeowner)
    assert Milestone.objects.get(pk=milestone.pk).status == "pending"


def test_cancel_a_project_with_nothing_funded_cancels_its_milestones():
    milestone = MilestoneFactory()

    services.project_cancel(project_id=milestone.project_id, actor=milestone.project.homeowner)

    assert Project.objects.get(pk=milestone.project_id).status == "cancelled"
    assert Milestone.objects.get(pk=milestone.pk).status == "cancelled"


def test_a_project_holding_money_cannot_be_cancelled():
    milestone = MilestoneFactory()
    fund(milestone)

    with pytest.raises(IllegalTransition):
        services.project_cancel(project_id=milestone.project_id, actor=OperatorFactory())
    assert Project.objects.get(pk=milestone.project_id).status == "active"


# --- The journey ------------------------------------------------------------------------------


def test_funding_posts_gateway_to_escrow_once_per_reference():
    milestone = MilestoneFactory(amount=50_000)

    fund(milestone, reference="pay-1")
    with transaction.atomic():
        again = services.milestone_funded(
            milestone_id=milestone.pk,
            amount=50_000,
            currency="usd",
            reference="pay-1",
            provider="sandbox",
        )

    assert again.status == "funded"
    assert JournalEntry.objects.filter(kind="fund").count() == 1
    assert balances() == {f"escrow:milestone:{milestone.pk}": 50_000, "gateway:sandbox": 50_000}
    assert "milestone.funded" in event_types() and "escrow.balance_changed" in event_types()


def test_a_funding_for_the_wrong_amount_is_refused_and_nothing_posts():
    milestone = MilestoneFactory(amount=50_000)
    with transaction.atomic():
        services.milestone_fund_start(milestone_id=milestone.pk, actor=milestone.project.homeowner)

    with pytest.raises(FundingMismatch), transaction.atomic():
        services.milestone_funded(
            milestone_id=milestone.pk, amount=49_999, currency="usd", reference="p", provider="x"
        )

    assert Milestone.objects.get(pk=milestone.pk).status == "funding"
    assert not JournalEntry.objects.exists()


def test_a_failed_funding_returns_to_pending_and_a_late_failure_changes_nothing():
    milestone = MilestoneFactory()
    with transaction.atomic():
        services.milestone_fund_start(milestone_id=milestone.pk, actor=milestone.project.homeowner)
    with transaction.atomic():
        services.milestone_funding_failed(milestone_id=milestone.pk)
    assert Milestone.objects.get(pk=milestone.pk).status == "pending"

    fund(milestone)
    with transaction.atomic():
        services.milestone_funding_failed(milestone_id=milestone.pk)

    assert Milestone.objects.get(pk=milestone.pk).status == "funded"


def test_a_late_success_after_a_failure_still_funds():
    milestone = MilestoneFactory()
    with transaction.atomic():
        services.milestone_fund_start(milestone_id=milestone.pk, actor=milestone.project.homeowner)
        services.milestone_funding_failed(milestone_id=milestone.pk)

    with transaction.atomic():
        services.milestone_funded(
            milestone_id=milestone.pk,
            amount=milestone.amount,
            currency="usd",
            reference="late",
            provider="sandbox",
        )

    assert Milestone.objects.get(pk=milestone.pk).status == "funded"
    assert invariants.violations() == []


def test_submit_inspect_approve_releases_minus_the_fee(settings):
    settings.PLATFORM_FEE_PERCENT = "5"
    milestone = MilestoneFactory(amount=100_001)
    project = milestone.project
    fund(milestone)

    services.milestone_submit(milestone_id=milestone.pk, actor=project.contractor)
    services.milestone_request_inspection(milestone_id=milestone.pk, actor=project.homeowner)
    released = services.milestone_approve(milestone_id=milestone.pk, actor=project.homeowner)

    assert released.status == "released"
    fee = 5_000  # 5,000.05 rounds half up to 5,000
    assert balances() == {
        f"escrow:milestone:{milestone.pk}": 0,
        "gateway:sandbox": 100_001,
        f"payable:user:{project.contractor_id}": 100_001 - fee,
        "revenue:fees": fee,
    }
    released_event = Event.objects.get(type="milestone.released")
    assert released_event.data["fee"] + released_event.data["payout_amount"] == 100_001
    assert Project.objects.get(pk=project.pk).status == "completed"
    assert invariants.violations() == []


def test_event_data_carries_the_contract_fields():
    milestone = MilestoneFactory()

    fund(milestone)

    status_event = Event.objects.filter(type="milestone.status_updated").last()
    assert {
        "milestone_id",
        "project_id",
        "amount",
        "status",
        "previous_status",
        "new_status",
    } <= set(status_event.data)
    balance_event = Event.objects.get(type="escrow.balance_changed")
    assert balance_event.data["previous_balance"] == 0
    assert balance_event.data["new_balance"] == milestone.amount
    assert balance_event.data["reason"] == "funded"
    project = milestone.project
    assert sorted(balance_event.audience) == sorted([project.homeowner_id, project.contractor_id])
    assert f"project.{project.pk}" in balance_event.channels


def test_approving_twice_releases_once():
    milestone = submitted(MilestoneFactory())
    homeowner = milestone.project.homeowner

    services.milestone_approve(milestone_id=milestone.pk, actor=homeowner)
    services.milestone_approve(milestone_id=milestone.pk, actor=homeowner)

    assert JournalEntry.objects.filter(kind="release").count() == 1
    assert event_types().count("milestone.released") == 1


def test_the_contractor_cannot_approve_and_the_homeowner_cannot_submit():
    milestone = MilestoneFactory()
    fund(milestone)
    project = milestone.project

    with pytest.raises(NotAllowed):
        services.milestone_submit(milestone_id=milestone.pk, actor=project.homeowner)
    services.milestone_submit(milestone_id=milestone.pk, actor=project.contractor)
    with pytest.raises(NotAllowed):
        services.milestone_approve(milestone_id=milestone.pk, actor=project.contractor)

    assert Milestone.objects.get(pk=milestone.pk).status == "submitted"


def test_a_stranger_gets_not_found_and_nothing_changes():
    milestone = submitted(MilestoneFactory())
    before = event_types()

    with pytest.raises(MilestoneNotFound):
        services.milestone_approve(milestone_id=milestone.pk, actor=HomeownerFactory())

    assert Milestone.objects.get(pk=milestone.pk).status == "submitted"
    assert event_types() == before


def test_homeowner_refunds_before_submission():
    milestone = MilestoneFactory(amount=7_000)
    fund(milestone)

    refunded = services.milestone_refund(
        milestone_id=milestone.pk, actor=milestone.project.homeowner
    )

    assert refunded.status == "refunded"
    assert balances() == {f"escrow:milestone:{milestone.pk}": 0, "gateway:sandbox": 0}
    assert JournalEntry.objects.get(kind="refund").reference == f"refund:{milestone.pk}"


def test_homeowner_cannot_refund_after_submission_but_an_operator_can():
    milestone = submitted(MilestoneFactory())

    with pytest.raises(IllegalTransition):
        services.milestone_refund(milestone_id=milestone.pk, actor=milestone.project.homeowner)
    assert Milestone.objects.get(pk=milestone.pk).status == "submitted"

    services.milestone_refund(milestone_id=milestone.pk, actor=OperatorFactory())
    assert Milestone.objects.get(pk=milestone.pk).status == "refunded"


def test_a_released_milestone_cannot_be_refunded():
    milestone = submitted(MilestoneFactory())
    services.milestone_approve(milestone_id=milestone.pk, actor=milestone.project.homeowner)

    with pytest.raises(IllegalTransition):
        services.milestone_refund(milestone_id=milestone.pk, actor=OperatorFactory())

    assert JournalEntry.objects.filter(kind="refund").count() == 0


def test_settling_a_dispute_splits_one_entry_with_every_leg(settings):
    settings.PLATFORM_FEE_PERCENT = "10"
    milestone = MilestoneFactory(amount=10_000)
    fund(milestone)
    services.milestone_freeze(milestone_id=milestone.pk, reason="chargeback")

    services.milestone_settle_dispute(milestone_id=milestone.pk, release_amount=6_000)

    milestone.refresh_from_db()
    assert milestone.status == "split"
    entry = JournalEntry.objects.get(kind="split")
    assert sorted(p.amount for p in entry.postings.all()) == [-5_400, -4_000, -600, 10_000]
    settlement = selectors.milestone_settlement(milestone_id=milestone.pk)
    assert (settlement.payout_amount, settlement.fee, settlement.refund_amount) == (
        5_400,
        600,
        4_000,
    )
    assert invariants.violations() == []


def test_zero_decimal_currency_flows_in_whole_units(settings):
    settings.PLATFORM_FEE_PERCENT = "5"
    milestone = MilestoneFactory(project=ProjectFactory(currency="jpy"), amount=15_010)
    submitted(milestone)

    services.milestone_approve(milestone_id=milestone.pk, actor=milestone.project.homeowner)

    assert balances("jpy")["revenue:fees"] == 751  # 750.5 rounds up
    assert balances("jpy")[f"payable:user:{milestone.project.contractor_id}"] == 14_259


def test_reactions_fire_after_commit_only(django_capture_on_commit_callbacks):
    calls = []
    reactions.milestone_settled.register(calls.append)
    try:
        milestone = submitted(MilestoneFactory())
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            services.milestone_approve(milestone_id=milestone.pk, actor=milestone.project.homeowner)
        assert calls == []  # nothing before the commit
        for callback in callbacks:
            callback()
    finally:
        reactions.milestone_settled.unregister(calls.append)

    fee = calls[0].fee
    assert calls == [
        reactions.Settlement(
            milestone_id=milestone.pk,
            project_id=milestone.project_id,
            status="released",
            currency="usd",
            released_amount=100_000,
            fee=fee,
            refunded_amount=0,
        )
    ]
    assert fee > 0


def test_a_reaction_refuses_a_payload_of_another_type():
    with pytest.raises(TypeError):
        reactions.milestone_settled.fire({"milestone_id": 1})


def test_auto_release_after_the_review_window_only_for_submitted():
    waiting = submitted(MilestoneFactory())
    inspecting = submitted(MilestoneFactory())
    services.milestone_request_inspection(
        milestone_id=inspecting.pk, actor=inspecting.project.homeowner
    )
    fresh = submitted(MilestoneFactory())
    Milestone.objects.filter(pk__in=[waiting.pk, inspecting.pk]).update(
        review_deadline=timezone.now() - timedelta(minutes=1)
    )

    released = services.milestone_auto_release_due()

    assert released == [waiting.pk]
    statuses = dict(Milestone.objects.values_list("pk", "status"))
    assert statuses[waiting.pk] == "released"
    assert statuses[inspecting.pk] == "inspection"
    assert statuses[fresh.pk] == "submitted"


def test_submission_sets_the_review_deadline_from_the_setting(settings):
    settings.MILESTONE_REVIEW_WINDOW = timedelta(days=3)

    milestone = submitted(MilestoneFactory())

    window = milestone.review_deadline - milestone.submitted_at
    assert window == timedelta(days=3)


def test_utilization_comes_from_the_ledger(settings):
    settings.PLATFORM_FEE_PERCENT = "5"
    project = ProjectFactory()
    a = MilestoneFactory(project=project, amount=1_000)
    b = MilestoneFactory(project=project, amount=2_000)
    MilestoneFactory(project=project, amount=4_000)
    submitted(a)
    services.milestone_approve(milestone_id=a.pk, actor=project.homeowner)
    fund(b)
    services.milestone_refund(milestone_id=b.pk, actor=project.homeowner)

    u = selectors.project_utilization(project=project)

    assert (u.budget, u.funded, u.released, u.fees, u.refunded, u.held) == (
        7_000, 3_000, 1_000, 50, 2_000, 0,
    )  # fmt: skip
    assert u.remaining == 6_000


def test_balances_for_each_party():
    project = ProjectFactory()
    held = MilestoneFactory(project=project, amount=3_000)
    paid = MilestoneFactory(project=project, amount=1_000)
    fund(held)
    submitted(paid)
    services.milestone_approve(milestone_id=paid.pk, actor=project.homeowner)

    assert selectors.balances_for_user(user=project.homeowner) == {
        "usd": {"escrow_held": 3_000, "pending": 0, "payable": 0, "paid_out": 0}
    }
    assert selectors.balances_for_user(user=project.contractor)["usd"]["payable"] == 950
    assert selectors.balances_for_user(user=HomeownerFactory()) == {}


def test_payout_entries_move_payable_to_paid_out():
    milestone = submitted(MilestoneFactory(amount=2_000))
    services.milestone_approve(milestone_id=milestone.pk, actor=milestone.project.homeowner)
    contractor_id = milestone.project.contractor_id

    with transaction.atomic():
        ledger.post_payout_started(
            payout_reference="po1", user_id=contractor_id, amount=1_900, currency="usd"
        )
        ledger.post_payout_paid(
            payout_reference="po1",
            user_id=contractor_id,
            amount=1_900,
            currency="usd",
            provider="sandbox",
        )

    assert selectors.balances_for_user(user=milestone.project.contractor)["usd"] == {
        "escrow_held": 0,
        "pending": 0,
        "payable": 0,
        "paid_out": 1_900,
    }
    assert invariants.violations() == []


def _refund_part(milestone, amount, reference):
    with transaction.atomic():
        return services.milestone_refund_partial(
            milestone_id=milestone.pk, amount=amount, reference=reference, provider="sandbox"
        )


def test_a_partial_refund_leaves_the_rest_in_escrow_and_a_release_moves_only_that(settings):
    settings.PLATFORM_FEE_PERCENT = "10"
    milestone = submitted(MilestoneFactory(amount=10_000))

    _refund_part(milestone, 4_000, "r1")
    _refund_part(milestone, 4_000, "r1")  # the same gateway refund again: no second posting
    services.milestone_approve(milestone_id=milestone.pk, actor=milestone.project.homeowner)

    assert Milestone.objects.get(pk=milestone.pk).partial_refunds == 4_000
    assert balances() == {
        f"escrow:milestone:{milestone.pk}": 0,
        "gateway:sandbox": 6_000,
        f"payable:user:{milestone.project.contractor_id}": 5_400,
        "revenue:fees": 600,
    }
    assert invariants.violations() == []


def test_refunding_all_that_is_left_makes_the_milestone_refunded():
    milestone = MilestoneFactory(amount=10_000)
    fund(milestone)

    _refund_part(milestone, 3_000, "r1")
    _refund_part(milestone, 7_000, "r2")

    assert Milestone.objects.get(pk=milestone.pk).status == "refunded"
    assert invariants.violations() == []


def test_a_partial_refund_larger_than_what_is_held_changes_nothing():
    from escrow.exceptions import InsufficientFunds

    milestone = MilestoneFactory(amount=10_000)
    fund(milestone)
    _refund_part(milestone, 6_000, "r1")

    with pytest.raises(InsufficientFunds):
        _refund_part(milestone, 4_001, "r2")

    assert Milestone.objects.get(pk=milestone.pk).partial_refunds == 6_000
    assert ledger.escrow_balance_of(milestone.pk) == 4_000
    assert not JournalEntry.objects.filter(reference="refund:r2").exists()


def test_a_funding_reference_already_posted_for_another_milestone_is_refused():
    first, second = MilestoneFactory(), MilestoneFactory()
    fund(first, reference="pay-shared")
    with transaction.atomic():
        services.milestone_fund_start(milestone_id=second.pk, actor=second.project.homeowner)

    with pytest.raises(FundingMismatch), transaction.atomic():
        services.milestone_funded(
            milestone_id=second.pk,
            amount=second.amount,
            currency="usd",
            reference="pay-shared",
            provider="sandbox",
        )

    assert Milestone.objects.get(pk=second.pk).status == "funding"
    assert ledger.escrow_balance_of(second.pk) == 0


# --- Issue 14: refund holds, and a freeze that only a settlement or an unfreeze ends ---------


def _hold(milestone, amount, reference):
    from escrow.locks import milestone_for_update

    with transaction.atomic():
        locked = milestone_for_update(milestone_id=milestone.pk)
        services.milestone_refund_hold(locked, amount=amount, reference=reference)


def test_a_hold_keeps_its_money_out_of_a_release_and_settles_out_of_the_hold(settings):
    """A pending refund's hold moves its amount from escrow to hold:refund:<reference>; the
    release moves only the rest (fee on the rest), and the confirmed refund settles out of
    the hold, leaving every account at what it should be."""
    settings.PLATFORM_FEE_PERCENT = "10"
    milestone = submitted(MilestoneFactory(amount=10_000))

    _hold(milestone, 6_000, "r1")
    services.milestone_approve(milestone_id=milestone.pk, actor=milestone.project.homeowner)
    _refund_part(milestone, 6_000, "r1")

    milestone.refresh_from_db()
    assert (milestone.status, milestone.partial_refunds, milestone.refund_holds) == (
        "released",
        6_000,
        0,
    )
    assert balances() == {
        f"escrow:milestone:{milestone.pk}": 0,
        "hold:refund:r1": 0,
        "gateway:sandbox": 4_000,
        f"payable:user:{milestone.project.contractor_id}": 3_600,
        "revenue:fees": 400,
    }
    assert invariants.violations() == []


def test_a_returned_hold_after_a_settlement_stays_in_escrow_for_the_next_refund():
    """A refund the gateway fails after the milestone was settled gives its hold back to
    escrow, where check_ledger expects it and a new refund may take it."""
    milestone = submitted(MilestoneFactory(amount=10_000))
    _hold(milestone, 6_000, "r1")
    services.milestone_approve(milestone_id=milestone.pk, actor=milestone.project.homeowner)

    with transaction.atomic():
        services.milestone_refund_hold_return(milestone_id=milestone.pk, reference="r1")

    assert ledger.escrow_balance_of(milestone.pk) == 6_000
    assert invariants.violations() == []
    _hold(Milestone.objects.get(pk=milestone.pk), 6_000, "r2")
    _refund_part(milestone, 6_000, "r2")
    assert ledger.escrow_balance_of(milestone.pk) == 0
    assert invariants.violations() == []


def test_a_hold_larger_than_what_is_left_unclaimed_is_refused_and_changes_nothing():
    from escrow.exceptions import InsufficientFunds

    milestone = MilestoneFactory(amount=10_000)
    fund(milestone)
    _hold(milestone, 6_000, "r1")
    before = balances()

    with pytest.raises(InsufficientFunds):
        _hold(Milestone.objects.get(pk=milestone.pk), 4_001, "r2")

    assert balances() == before
    assert Milestone.objects.get(pk=milestone.pk).refund_holds == 6_000
    assert not JournalEntry.objects.filter(reference="refund-hold:r2").exists()


def test_a_milestone_refund_moves_only_what_no_pending_refund_holds():
    milestone = MilestoneFactory(amount=10_000)
    fund(milestone)
    _hold(milestone, 6_000, "r1")

    services.milestone_refund(milestone_id=milestone.pk, actor=milestone.project.homeowner)

    assert JournalEntry.objects.get(reference=f"refund:{milestone.pk}").amount == 4_000
    assert balances()["hold:refund:r1"] == 6_000
    assert invariants.violations() == []


def test_a_frozen_milestone_cannot_be_refunded_by_an_operator():
    """Regression (issue 14): milestone_refund skipped the status check for operators and the
    table allows disputed → refunded, so an operator refunded a frozen milestone."""
    milestone = submitted(MilestoneFactory(amount=10_000))
    services.milestone_freeze(milestone_id=milestone.pk, reason="chargeback")
    before = balances()

    with pytest.raises(IllegalTransition, match="disputed"):
        services.milestone_refund(milestone_id=milestone.pk, actor=OperatorFactory())

    assert Milestone.objects.get(pk=milestone.pk).status == "disputed"
    assert balances() == before
    assert not JournalEntry.objects.filter(kind="refund").exists()


def test_a_frozen_milestone_takes_no_refund_hold():
    milestone = MilestoneFactory(amount=10_000)
    fund(milestone)
    services.milestone_freeze(milestone_id=milestone.pk, reason="chargeback")

    with pytest.raises(IllegalTransition):
        _hold(Milestone.objects.get(pk=milestone.pk), 1_000, "r1")

    assert not JournalEntry.objects.filter(kind="refund_hold").exists()


def test_an_unfreeze_goes_back_to_the_status_before_the_freeze():
    """A chargeback won or closed in the merchant's favour lifts the freeze: the milestone is
    back where it was (submitted, with a new review window) and can be released."""
    milestone = submitted(MilestoneFactory(amount=10_000))
    services.milestone_request_inspection(
        milestone_id=milestone.pk, actor=milestone.project.homeowner
    )
    services.milestone_freeze(milestone_id=milestone.pk, reason="chargeback")

    services.milestone_unfreeze(milestone_id=milestone.pk, reason="chargeback won")
    services.milestone_unfreeze(milestone_id=milestone.pk, reason="again")  # idempotent

    milestone.refresh_from_db()
    assert (milestone.status, milestone.frozen_from) == ("inspection", "")
    assert Event.objects.filter(type="milestone.unfrozen").count() == 1
    services.milestone_approve(milestone_id=milestone.pk, actor=milestone.project.homeowner)
    assert Milestone.objects.get(pk=milestone.pk).status == "released"
    assert invariants.violations() == []


def test_settling_a_milestone_that_is_not_disputed_is_refused_and_changes_nothing():
    """Regression (issue 14): release_amount=0 used to refund a merely funded milestone."""
    milestone = MilestoneFactory(amount=10_000)
    fund(milestone)
    before = balances()

    with pytest.raises(IllegalTransition, match="funded"):
        services.milestone_settle_dispute(milestone_id=milestone.pk, release_amount=0)

    assert Milestone.objects.get(pk=milestone.pk).status == "funded"
    assert balances() == before


@pytest.mark.parametrize(
    ("release_amount", "error"),
    [(10_001, "InsufficientFunds"), (-1, "InvalidInput"), ("5", "InvalidInput")],
)
def test_settling_a_dispute_raises_what_its_docstring_says(release_amount, error):
    """Regression (issue 14): more than held raised FundingMismatch, not the documented
    InsufficientFunds."""
    from common.errors import InvalidInput
    from escrow.exceptions import InsufficientFunds

    expected = {"InsufficientFunds": InsufficientFunds, "InvalidInput": InvalidInput}[error]
    milestone = MilestoneFactory(amount=10_000)
    fund(milestone)
    services.milestone_freeze(milestone_id=milestone.pk, reason="chargeback")
    before = balances()

    with pytest.raises(expected):
        services.milestone_settle_dispute(milestone_id=milestone.pk, release_amount=release_amount)

    assert Milestone.objects.get(pk=milestone.pk).status == "disputed"
    assert balances() == before


def test_a_caller_supplied_fee_policy_decides_a_settlements_fee():
    milestone = MilestoneFactory(amount=10_000)
    fund(milestone)
    services.milestone_freeze(milestone_id=milestone.pk, reason="chargeback")
    asked = []

    def flat_fee(m, release_amount):
        asked.append((m.pk, release_amount))
        return 250

    services.milestone_settle_dispute(
        milestone_id=milestone.pk, release_amount=6_000, fee_policy=flat_fee
    )

    assert asked == [(milestone.pk, 6_000)]
    settlement = selectors.milestone_settlement(milestone_id=milestone.pk)
    assert (settlement.payout_amount, settlement.fee, settlement.refund_amount) == (
        5_750,
        250,
        4_000,
    )


def test_the_configured_fee_policy_decides_a_releases_fee(settings):
    settings.ESCROW_FEE_POLICY = "escrow.fees.no_fee"
    milestone = submitted(MilestoneFactory(amount=10_000))

    services.milestone_approve(milestone_id=milestone.pk, actor=milestone.project.homeowner)

    assert selectors.milestone_settlement(milestone_id=milestone.pk).fee == 0


@pytest.mark.parametrize("answer", [-1, 6_001, 12.5, "100"])
def test_a_fee_policy_answer_outside_the_release_posts_nothing(answer):
    milestone = MilestoneFactory(amount=10_000)
    fund(milestone)
    services.milestone_freeze(milestone_id=milestone.pk, reason="chargeback")

    with pytest.raises(ValueError, match="fee policy"):
        services.milestone_settle_dispute(
            milestone_id=milestone.pk, release_amount=6_000, fee_policy=lambda m, r: answer
        )

    milestone.refresh_from_db()
    assert milestone.status == "disputed"
    assert not JournalEntry.objects.filter(kind="split").exists()
