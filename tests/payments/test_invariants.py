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
