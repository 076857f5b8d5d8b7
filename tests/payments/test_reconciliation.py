"""Reconciliation on the sandbox gateway: each kind of difference is reported, a missed
webhook is repaired by re-fetching, and `manage.py reconcile` reports and exits accordingly."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from escrow.models import JournalEntry
from payments.gateways import sandbox
from payments.models import SandboxObject
from payments.services import reconcile
from tests.payments.helpers import fund

pytestmark = pytest.mark.django_db(transaction=True)


def test_everything_in_order_reports_nothing(milestone):
    fund(milestone)

    run = reconcile(provider="sandbox")

    assert run.discrepancy_count == 0
    assert run.checked >= 1
    assert run.error == ""


def test_a_missed_webhook_is_repaired_by_refetching(milestone):
    payment = fund(milestone, "pm_card_authenticationRequired")
    # The customer authenticates; the gateway's webhooks are lost.
    sandbox.SandboxGateway().complete_authentication(payment_id=payment.gateway_payment_id)
    sandbox.take_outbox()

    run = reconcile(provider="sandbox")

    # The repair applied what the gateway says (authorized), and the capture followed.
    payment.refresh_from_db()
    assert payment.status == "completed"
    finding = run.findings.get()
    assert (finding.kind, finding.is_repaired) == ("status_mismatch", True)
    assert JournalEntry.objects.filter(reference=f"fund:{payment.pk}").count() == 1


def test_a_gateway_payment_we_do_not_know_is_reported(milestone):
    sandbox.SandboxGateway().create_payment(
        amount=777,
        currency="usd",
        payment_method="pm_card_visa",
        capture_method="automatic",
        metadata={},
        idempotency_key="somebody-else",
    )

    run = reconcile(provider="sandbox")

    finding = run.findings.get()
    assert finding.kind == "missing_locally"
    assert not finding.is_repaired


def test_a_payment_the_gateway_does_not_know_is_reported(milestone):
    payment = fund(milestone)
    SandboxObject.objects.filter(object_id=payment.gateway_payment_id).delete()

    run = reconcile(provider="sandbox")

    assert run.findings.filter(kind="missing_at_gateway", local_id=str(payment.pk)).exists()


def test_an_amount_mismatch_is_reported(milestone):
    payment = fund(milestone)
    intent = SandboxObject.objects.get(object_id=payment.gateway_payment_id)
    intent.data["amount"] = payment.amount + 1
    intent.save()

    run = reconcile(provider="sandbox")

    assert run.findings.filter(kind="amount_mismatch", local_id=str(payment.pk)).exists()


def test_a_completed_payment_without_its_ledger_entry_is_reported(milestone):
    from unittest import mock

    from escrow.exceptions import IllegalTransition

    # The milestone moved on meanwhile (escrow refused the funding): money taken, no entry.
    refused = IllegalTransition(obj_name="Milestone", current="cancelled", target="funded")
    with mock.patch(
        "payments.services.funding.escrow_services.milestone_funded", side_effect=refused
    ):
        payment = fund(milestone)
    assert payment.status == "completed"

    run = reconcile(provider="sandbox")

    assert run.findings.filter(kind="ledger_missing", local_id=str(payment.pk)).exists()


def test_refunds_and_transfers_are_compared(homeowner, contractor, operator, milestone):
    payment = fund(milestone)
    operator.post(f"/api/v1/payments/{payment.pk}/refunds", {"amount": 100}, format="json")

    run = reconcile(provider="sandbox")

    assert run.discrepancy_count == 0
    assert run.checked >= 2


def test_the_command_prints_a_summary_and_exits_1_on_open_findings(milestone):
    fund(milestone)
    out = StringIO()
    call_command(
        "reconcile",
        "--since",
        (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%d"),
        stdout=out,
    )
    assert "0 discrepancies" in out.getvalue()

    sandbox.SandboxGateway().create_payment(
        amount=5,
        currency="usd",
        payment_method="pm_card_visa",
        capture_method="automatic",
        metadata={},
        idempotency_key="stray",
    )
    out = StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("reconcile", stdout=out)
    assert exit_info.value.code == 1
    assert "missing_locally" in out.getvalue()


def test_the_command_rejects_a_bad_date():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("reconcile", "--since", "yesterday")
