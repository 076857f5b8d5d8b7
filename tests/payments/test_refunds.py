"""Refunds: operators' partial and whole refunds through the API, the database's ceiling,
and the gateway refund that carries out escrow's milestone refund."""

import pytest
from django.db import IntegrityError, transaction

from escrow import ledger
from escrow.models import JournalEntry, Milestone
from payments.gateways import sandbox
from payments.models import Payment, Refund, SandboxObject
from realtime.models import Event
from tests.payments.helpers import fund

pytestmark = pytest.mark.django_db(transaction=True)


def refund(operator, payment, amount):
    return operator.post(
        f"/api/v1/payments/{payment.pk}/refunds", {"amount": amount}, format="json"
    )


def test_partial_then_full_refund(operator, homeowner, milestone):
    payment = fund(milestone)

    first = refund(operator, payment, 20_000)

    assert first.status_code == 201
    assert set(first.json()) >= {"id", "amount", "status"}
    assert first.json()["amount"] == 20_000
    body = homeowner.get(f"/api/v1/payments/{payment.pk}").json()
    assert body["status"] == "partially_refunded"
    assert body["amount_refunded"] == 20_000
    assert ledger.escrow_balance_of(milestone.pk) == 30_000

    second = refund(operator, payment, 30_000)

    assert second.status_code == 201
    body = homeowner.get(f"/api/v1/payments/{payment.pk}").json()
    assert body["status"] == "refunded"
    assert body["amount_refunded"] == 50_000
    assert ledger.escrow_balance_of(milestone.pk) == 0
    refunded = Event.objects.filter(type="payment.refunded", aggregate_id=str(payment.pk))
    assert refunded.count() == 2
    assert {"payment_id", "amount", "currency", "status"} <= set(refunded.first().data)
    gateway_refunds = SandboxObject.objects.filter(kind="refund")
    assert sorted(r.data["amount"] for r in gateway_refunds) == [20_000, 30_000]


def test_more_than_what_is_left_is_400_and_changes_nothing(operator, milestone):
    payment = fund(milestone)
    refund(operator, payment, 40_000)

    response = refund(operator, payment, 10_001)

    assert response.status_code == 400
    payment.refresh_from_db()
    assert payment.amount_refunded == 40_000
    assert payment.refunds.count() == 1
    assert ledger.escrow_balance_of(milestone.pk) == 10_000


@pytest.mark.parametrize("amount", [0, -5, "ten", "5", 5.0, 2.5, True, None, 10**20])
def test_invalid_amounts_are_400(operator, milestone, amount):
    """Amounts are JSON integers of minor units (the contract): a numeric string, a float
    (even a whole one), a boolean or an out-of-range number is refused, not converted."""
    payment = fund(milestone)

    assert refund(operator, payment, amount).status_code == 400
    assert not payment.refunds.exists()


def test_only_operators_refund(homeowner, contractor, stranger, milestone):
    payment = fund(milestone)

    assert refund(homeowner, payment, 100).status_code == 403
    assert refund(contractor, payment, 100).status_code == 403
    assert refund(stranger, payment, 100).status_code == 404
    assert not payment.refunds.exists()


def test_a_payment_that_captured_nothing_cannot_be_refunded(operator, milestone):
    payment = fund(milestone, "pm_card_chargeDeclined")

    assert refund(operator, payment, 100).status_code == 409
    assert not payment.refunds.exists()


def test_the_database_refuses_refunding_more_than_the_amount(milestone):
    payment = fund(milestone)

    with pytest.raises(IntegrityError), transaction.atomic():
        Payment.objects.filter(pk=payment.pk).update(amount_refunded=payment.amount + 1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Payment.objects.filter(pk=payment.pk).update(amount_refunded=-1)


def test_a_milestone_refund_refunds_the_funding_payment_at_the_gateway(homeowner, milestone):
    payment = fund(milestone)

    response = homeowner.post(f"/api/v1/milestones/{milestone.pk}/refund")

    assert response.status_code == 200
    assert response.json()["status"] == "refunded"
    payment.refresh_from_db()
    assert payment.status == "refunded"
    assert payment.amount_refunded == payment.amount
    refund_row = Refund.objects.get(payment=payment)
    assert refund_row.reason == "milestone_refunded"
    assert refund_row.status == "succeeded"
    # Escrow posted the ledger; the gateway refund adds no second entry.
    assert JournalEntry.objects.filter(kind="refund", milestone=milestone).count() == 1
    sandbox.flush()  # the refund.created webhook changes nothing more
    assert Refund.objects.filter(payment=payment).count() == 1
    payment.refresh_from_db()
    assert payment.amount_refunded == payment.amount


def test_refund_after_release_is_a_conflict(operator, homeowner, contractor, milestone):
    payment = fund(milestone)
    contractor.post(f"/api/v1/milestones/{milestone.pk}/submit")
    homeowner.post(f"/api/v1/milestones/{milestone.pk}/approve")
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.RELEASED

    response = refund(operator, payment, 100)

    assert response.status_code == 409
    assert not payment.refunds.exists()


def test_a_transient_gateway_error_defers_the_refund_then_it_succeeds(operator, milestone):
    payment = fund(milestone)
    sandbox.inject_fault("refund", "server_error")

    response = refund(operator, payment, 1_000)

    refund_row = Refund.objects.get(pk=response.json()["id"])
    assert refund_row.status == "pending"
    assert refund_row.next_attempt_at is not None
    payment.refresh_from_db()
    assert payment.amount_refunded == 0

    from payments.services import refund_process

    refund_process(refund_id=refund_row.pk)

    refund_row.refresh_from_db()
    assert refund_row.status == "succeeded"
    payment.refresh_from_db()
    assert payment.amount_refunded == 1_000


def test_refunding_everything_is_escrows_milestone_refund_and_keeps_the_ledger_whole(
    operator, milestone
):
    from escrow.invariants import violations

    payment = fund(milestone)

    response = refund(operator, payment, payment.amount)

    assert response.status_code == 201
    assert response.json()["amount"] == payment.amount
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.REFUNDED
    payment.refresh_from_db()
    assert payment.status == "refunded"
    assert payment.refunds.count() == 1
    assert ledger.escrow_balance_of(milestone.pk) == 0
    assert violations() == []


def test_after_a_partial_refund_approval_releases_the_rest_and_the_ledger_holds(
    operator, homeowner, contractor, milestone
):
    """Regression: the partial refund used to leave escrow short of the milestone's amount, so
    check_ledger failed and the approval could not release."""
    from django.core.management import call_command

    payment = fund(milestone)
    assert refund(operator, payment, 20_000).status_code == 201

    contractor.post(f"/api/v1/milestones/{milestone.pk}/submit")
    approved = homeowner.post(f"/api/v1/milestones/{milestone.pk}/approve")

    assert approved.status_code == 200 and approved.json()["status"] == "released"
    release = JournalEntry.objects.get(reference=f"release:{milestone.pk}")
    assert release.amount == 30_000
    call_command("check_ledger")


# --- Issue 14: money promised to a pending refund is held in the ledger -----------------------


def pending_refund(operator, payment, amount) -> Refund:
    """An operator refund the gateway has not confirmed yet (its first call failed with a 5xx,
    so it waits for its retry)."""
    sandbox.inject_fault("refund", "server_error")
    response = refund(operator, payment, amount)
    assert response.status_code == 201
    row = Refund.objects.get(pk=response.json()["id"])
    assert row.status == "pending"
    return row


def check_ledger_clean() -> None:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("check_ledger", stdout=out)  # SystemExit(1) on any violation


def test_a_pending_operator_refund_then_the_homeowners_milestone_refund_refund_the_amount_once(
    operator, homeowner, project
):
    """Regression (issue 14, the race taken one step at a time): an operator's 6,000 refund is
    still pending at the gateway when the homeowner refunds the 10,000 milestone. The
    milestone refund sizes itself from what escrow still holds (4,000), the operator's refund
    then settles out of its hold, and the payment ends refunded with both refunds
    succeeded. It used to refund 10,000 in the ledger plus 4,000 at the gateway and leave the
    6,000 pending forever (IllegalTransition when the gateway confirmed it)."""
    from payments.models import WebhookEvent
    from payments.services import refund_process
    from tests.escrow.factories import MilestoneFactory

    milestone = MilestoneFactory(project=project, amount=10_000)
    payment = fund(milestone)
    operator_refund = pending_refund(operator, payment, 6_000)

    response = homeowner.post(f"/api/v1/milestones/{milestone.pk}/refund")
    refund_process(refund_id=operator_refund.pk)
    sandbox.flush()

    assert response.status_code == 200 and response.json()["status"] == "refunded"
    payment.refresh_from_db()
    assert (payment.status, payment.amount_refunded) == ("refunded", 10_000)
    assert sorted(payment.refunds.values_list("amount", "status")) == [
        (4_000, "succeeded"),
        (6_000, "succeeded"),
    ]
    assert sum(r.data["amount"] for r in SandboxObject.objects.filter(kind="refund")) == 10_000
    assert not WebhookEvent.objects.filter(status__in=["parked", "failed", "received"]).exists()
    refunded = Event.objects.filter(type="payment.refunded", aggregate_id=str(payment.pk))
    assert refunded.count() == 2
    assert ledger.escrow_balance_of(milestone.pk) == 0
    check_ledger_clean()


def test_a_release_moves_only_what_is_not_promised_to_a_pending_refund(
    operator, homeowner, contractor, project
):
    """Regression (issue 14): the operator's pending 6,000 refund holds its money when it is
    created, so approving the 10,000 milestone releases 4,000 and the refund, confirmed
    afterwards, settles out of its hold. The release used to move the whole 10,000 and the
    refund was re-queued for ever once the gateway had refunded it."""
    from payments.services import refund_process
    from tests.escrow.factories import MilestoneFactory

    milestone = MilestoneFactory(project=project, amount=10_000)
    payment = fund(milestone)
    operator_refund = pending_refund(operator, payment, 6_000)
    assert ledger.escrow_balance_of(milestone.pk) == 4_000
    assert homeowner.get(f"/api/v1/milestones/{milestone.pk}").json()["escrow_balance"] == 4_000
    assert homeowner.get("/api/v1/balances").json()["usd"]["pending"] == 6_000

    contractor.post(f"/api/v1/milestones/{milestone.pk}/submit")
    approved = homeowner.post(f"/api/v1/milestones/{milestone.pk}/approve")
    refund_process(refund_id=operator_refund.pk)

    assert approved.status_code == 200 and approved.json()["status"] == "released"
    assert JournalEntry.objects.get(reference=f"release:{milestone.pk}").amount == 4_000
    operator_refund.refresh_from_db()
    assert operator_refund.status == "succeeded"
    payment.refresh_from_db()
    assert (payment.status, payment.amount_refunded) == ("partially_refunded", 6_000)
    assert homeowner.get("/api/v1/balances").json()["usd"]["pending"] == 0
    check_ledger_clean()


def test_a_refund_the_gateway_fails_gives_its_hold_back_to_the_milestone(operator, project):
    """The hold of a refund the gateway refuses goes back to the milestone's escrow, so a
    release or another refund can move it again."""
    from payments.gateways import RefundResult
    from payments.services.refunds import refund_apply
    from tests.escrow.factories import MilestoneFactory

    milestone = MilestoneFactory(project=project, amount=10_000)
    payment = fund(milestone)
    operator_refund = pending_refund(operator, payment, 6_000)

    refund_apply(
        refund_id=operator_refund.pk,
        result=RefundResult(id="re_failed", status="failed", amount=6_000, currency="usd"),
    )

    operator_refund.refresh_from_db()
    assert operator_refund.status == "failed"
    assert ledger.escrow_balance_of(milestone.pk) == 10_000
    milestone.refresh_from_db()
    assert (milestone.status, milestone.held_amount) == ("funded", 10_000)
    payment.refresh_from_db()
    assert (payment.status, payment.amount_refunded) == ("completed", 0)
    check_ledger_clean()
    assert refund(operator, payment, 10_000).status_code == 201


def test_a_full_operator_refund_of_a_milestone_in_inspection_is_refused_before_the_gateway(
    operator, homeowner, contractor, milestone
):
    """Regression (issue 14): a milestone in inspection cannot become refunded (the transition
    table), so a refund of all it holds is refused with 409 before anything is sent to the
    gateway. It used to take the partial path, refund at the gateway and stay pending."""
    payment = fund(milestone)
    contractor.post(f"/api/v1/milestones/{milestone.pk}/submit")
    homeowner.post(f"/api/v1/milestones/{milestone.pk}/request-inspection")

    response = refund(operator, payment, payment.amount)

    assert response.status_code == 409
    assert "inspection" in response.json()["error"]["message"]
    assert not payment.refunds.exists()
    assert not SandboxObject.objects.filter(kind="refund").exists()
    assert ledger.escrow_balance_of(milestone.pk) == payment.amount
    milestone.refresh_from_db()
    assert milestone.status == "inspection"
    check_ledger_clean()
