"""Payouts after release: a Connect-style transfer with the project's transfer group and the
funding charge as source, ledger payable → in transit → gateway, payout.paid."""

import pytest

from escrow import ledger
from escrow.models import JournalEntry, Milestone
from payments import services
from payments.gateways import sandbox
from payments.models import Payout, SandboxObject
from realtime.models import Event
from tests.payments.helpers import fund

pytestmark = pytest.mark.django_db(transaction=True)


def release(homeowner, contractor, milestone):
    assert contractor.post(f"/api/v1/milestones/{milestone.pk}/submit").status_code == 200
    response = homeowner.post(f"/api/v1/milestones/{milestone.pk}/approve")
    assert response.status_code == 200
    assert response.json()["status"] == "released"


def test_fund_submit_approve_pays_the_contractor_out(homeowner, contractor, milestone):
    payment = fund(milestone)

    release(homeowner, contractor, milestone)

    payout = Payout.objects.get(milestone=milestone)
    fee = milestone.amount * 5 // 100
    assert payout.status == "paid"
    assert payout.amount == milestone.amount - fee
    assert payout.payee_id == contractor.user.pk
    transfer = SandboxObject.objects.get(kind="transfer").data
    assert transfer["transfer_group"] == f"project-{milestone.project_id}"
    assert transfer["source_transaction"] == payment.gateway_charge_id
    assert transfer["destination"] == f"acct_sbx_{contractor.user.pk}"
    assert transfer["amount"] == payout.amount
    assert JournalEntry.objects.filter(reference=f"payout:{payout.pk}").count() == 1
    assert JournalEntry.objects.filter(reference=f"payout-paid:{payout.pk}").count() == 1
    payable = ledger.payable_account(contractor.user.pk, "usd")
    assert ledger.balance(payable) == 0
    assert ledger.balance(ledger.in_transit_account("usd")) == 0
    paid = Event.objects.get(type="payout.paid")
    assert paid.data["amount"] == payout.amount
    assert contractor.user.pk in paid.audience


def test_the_transfer_webhook_changes_nothing_more(homeowner, contractor, milestone):
    fund(milestone)
    release(homeowner, contractor, milestone)
    events_before = Event.objects.count()

    sandbox.flush()

    assert Event.objects.count() == events_before
    assert JournalEntry.objects.filter(kind="payout_paid").count() == 1


def test_starting_a_payout_twice_makes_one(homeowner, contractor, milestone):
    fund(milestone)
    release(homeowner, contractor, milestone)

    again = services.payout_start(milestone_id=milestone.pk)

    assert Payout.objects.filter(milestone=milestone).count() == 1
    assert again.pk == Payout.objects.get(milestone=milestone).pk
    assert SandboxObject.objects.filter(kind="transfer").count() == 1


def test_a_lost_hook_call_is_found_by_the_sweep(homeowner, contractor, milestone):
    from unittest import mock

    fund(milestone)
    with mock.patch("escrow.reactions.Reaction._run"):
        release(homeowner, contractor, milestone)
    assert not Payout.objects.exists()

    result = services.settlements_sweep()

    assert result["payouts"] == [milestone.pk]
    assert Payout.objects.get(milestone=milestone).status == "paid"


def test_a_transient_transfer_error_is_retried_later(homeowner, contractor, milestone):
    fund(milestone)
    sandbox.inject_fault("transfer", "server_error")

    release(homeowner, contractor, milestone)

    payout = Payout.objects.get(milestone=milestone)
    assert payout.status == "pending"
    assert payout.next_attempt_at is not None
    services.payout_process(payout_id=payout.pk)
    payout.refresh_from_db()
    assert payout.status == "paid"


def test_without_a_connected_account_the_payout_waits(homeowner, contractor, milestone, settings):
    from unittest import mock

    fund(milestone)
    with mock.patch.object(sandbox.SandboxGateway, "payout_destination_for", return_value=""):
        release(homeowner, contractor, milestone)
    payout = Payout.objects.get(milestone=milestone)
    assert payout.status == "needs_account"
    assert ledger.balance(ledger.in_transit_account("usd")) == payout.amount

    services.payout_account_set(user=contractor.user, provider="sandbox", account_id="acct_1")

    payout.refresh_from_db()
    assert payout.status == "paid"
    assert payout.destination == "acct_1"


def test_a_split_pays_the_contractor_and_refunds_the_homeowner(homeowner, contractor, milestone):
    from escrow import services as escrow_services

    payment = fund(milestone)
    escrow_services.milestone_freeze(milestone_id=milestone.pk, reason="test")

    escrow_services.milestone_settle_dispute(milestone_id=milestone.pk, release_amount=20_000)

    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.SPLIT
    payout = Payout.objects.get(milestone=milestone)
    assert payout.status == "paid"
    assert payout.amount == 20_000 - 1_000
    payment.refresh_from_db()
    assert payment.amount_refunded == 30_000
    assert payment.status == "partially_refunded"
