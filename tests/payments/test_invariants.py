"""Payments' checks inside check_ledger: clean after real flows, and each kind of mismatch is
reported."""

from io import StringIO
from unittest import mock

import pytest
from django.core.management import call_command

from escrow.exceptions import IllegalTransition
from payments.invariants import funding_violations
from payments.models import Payment, Payout
from tests.payments.helpers import fund

pytestmark = pytest.mark.django_db(transaction=True)


def test_real_flows_leave_no_violation(homeowner, contractor, operator, milestone, project):
    from tests.escrow.factories import MilestoneFactory

    other = fund(MilestoneFactory(project=project, amount=30_000))
    fund(milestone)
    operator.post(f"/api/v1/payments/{other.pk}/refunds", {"amount": other.amount}, format="json")
    contractor.post(f"/api/v1/milestones/{milestone.pk}/submit")
    homeowner.post(f"/api/v1/milestones/{milestone.pk}/approve")

    assert funding_violations() == []
    out = StringIO()
    call_command("check_ledger", stdout=out)
    assert "ok" in out.getvalue()


def test_a_captured_payment_without_its_entry_is_reported(milestone):
    refused = IllegalTransition(obj_name="Milestone", current="cancelled", target="funded")
    with mock.patch(
        "payments.services.funding.escrow_services.milestone_funded", side_effect=refused
    ):
        payment = fund(milestone)

    assert funding_violations() == [
        f"payment {payment.pk} is captured but has no ledger entry fund:{payment.pk}"
    ]


def test_refunded_amounts_must_match_confirmed_refunds(milestone):
    payment = fund(milestone)
    Payment.objects.filter(pk=payment.pk).update(amount_refunded=10)

    assert funding_violations() == [
        f"payment {payment.pk} has refunded 10 but its succeeded refunds sum to 0"
    ]


def test_payout_status_must_match_its_ledger_steps(homeowner, contractor, milestone):
    fund(milestone)
    contractor.post(f"/api/v1/milestones/{milestone.pk}/submit")
    homeowner.post(f"/api/v1/milestones/{milestone.pk}/approve")
    payout = Payout.objects.get()
    Payout.objects.filter(pk=payout.pk).update(status="pending")

    assert funding_violations() == [
        f"payout {payout.pk} is pending but its ledger steps are "
        "started=True paid=True failed=False"
    ]


# --- Issue 14: refunds against the ledger and the gateway -------------------------------------


def check_ledger_fails_with(message: str) -> None:
    """check_ledger exits 1 and names the violation."""
    out = StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("check_ledger", stdout=out)
    assert exited.value.code == 1
    assert message in out.getvalue(), out.getvalue()


def pending_refund(operator, payment, amount):
    from payments.gateways import sandbox
    from payments.models import Refund

    sandbox.inject_fault("refund", "server_error")
    response = operator.post(
        f"/api/v1/payments/{payment.pk}/refunds", {"amount": amount}, format="json"
    )
    assert response.status_code == 201
    return Refund.objects.get(pk=response.json()["id"])


def test_a_succeeded_refund_missing_from_amount_refunded_is_reported(operator, milestone):
    """amount_refunded is checked for every payment with a succeeded refund, not only those
    whose amount_refunded is above zero (a refund confirmed but never counted was missed)."""
    payment = fund(milestone)
    operator.post(f"/api/v1/payments/{payment.pk}/refunds", {"amount": 1_000}, format="json")
    Payment.objects.filter(pk=payment.pk).update(amount_refunded=0, status="completed")

    check_ledger_fails_with(
        f"payment {payment.pk} has refunded 0 but its succeeded refunds sum to 1000"
    )


def test_a_refund_the_gateway_answered_succeeded_but_still_pending_is_reported(operator, milestone):
    from payments.models import GatewayAttempt, Refund

    payment = fund(milestone)
    refund = pending_refund(operator, payment, 1_000)
    GatewayAttempt.objects.create(
        provider="sandbox",
        operation=GatewayAttempt.Operation.REFUND,
        idempotency_key=f"refund:{refund.pk}",
        refund=refund,
        payment=payment,
        outcome=GatewayAttempt.Outcome.SUCCEEDED,
        gateway_status="succeeded",
    )

    assert Refund.objects.get(pk=refund.pk).status == "pending"
    check_ledger_fails_with(f"refund {refund.pk} is pending but the gateway confirmed it")


def test_a_refund_confirmed_by_a_parked_webhook_but_still_pending_is_reported(operator, milestone):
    """The bug's footprint: the gateway's refund.created sits parked in the inbox while our
    refund stays pending."""
    from django.utils import timezone

    from payments.models import WebhookEvent

    payment = fund(milestone)
    refund = pending_refund(operator, payment, 1_000)
    WebhookEvent.objects.create(
        provider="sandbox",
        event_id="evt_parked_refund",
        type="refund.created",
        status=WebhookEvent.Status.PARKED,
        received_at=timezone.now(),
        payload={
            "id": "evt_parked_refund",
            "type": "refund.created",
            "data": {
                "object": {
                    "id": "re_x",
                    "object": "refund",
                    "status": "succeeded",
                    "amount": 1_000,
                    "metadata": {"refund_id": str(refund.pk)},
                }
            },
        },
    )

    check_ledger_fails_with(
        f"refund {refund.pk} is pending but the gateway confirmed it: webhook evt_parked_refund"
    )


def test_a_pending_refund_whose_hold_differs_is_reported(operator, milestone):
    from payments.models import Refund

    payment = fund(milestone)
    refund = pending_refund(operator, payment, 6_000)
    Refund.objects.filter(pk=refund.pk).update(amount=5_000)

    check_ledger_fails_with(f"refund {refund.pk} is pending for 5000 but its hold holds 6000")


def test_a_hold_left_behind_by_a_finished_refund_is_reported(operator, milestone):
    from payments.models import Refund

    payment = fund(milestone)
    refund = pending_refund(operator, payment, 6_000)
    Refund.objects.filter(pk=refund.pk).update(status="failed")

    check_ledger_fails_with(
        f"hold:refund:payment-refund:{refund.pk} holds 6000 for no pending refund"
    )


def test_a_milestone_whose_recorded_holds_differ_from_its_hold_accounts_is_reported(
    operator, milestone
):
    from escrow.models import Milestone

    payment = fund(milestone)
    pending_refund(operator, payment, 6_000)
    Milestone.objects.filter(pk=milestone.pk).update(refund_holds=5_000)

    check_ledger_fails_with(
        f"milestone {milestone.pk} records 5000 held for pending refunds but its hold "
        "accounts hold 6000"
    )


def test_pending_refunds_with_their_holds_leave_no_violation(operator, milestone):
    payment = fund(milestone)
    pending_refund(operator, payment, 6_000)

    out = StringIO()
    call_command("check_ledger", stdout=out)
    assert "ledger ok" in out.getvalue()
