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
