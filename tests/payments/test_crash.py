"""A worker dies after the gateway acted but before our commit: the task is redelivered
(acks_late + reject_on_worker_lost) and the rerun finishes the job without charging,
transferring or posting anything twice."""

import os
import subprocess
import sys
from unittest import mock

import pytest
from django.db import connection

from escrow.models import JournalEntry
from payments import services, tasks
from payments.models import Payment, Payout, SandboxObject
from tests.conftest import requires_postgres
from tests.payments.helpers import fund

pytestmark = pytest.mark.django_db(transaction=True)


class WorkerKilled(BaseException):
    """Stands in for SIGKILL: nothing after it in the task runs, no handler catches it."""


def test_tasks_ack_late_and_reject_on_worker_lost():
    for task in (
        tasks.payment_process_task,
        tasks.refund_process_task,
        tasks.payout_process_task,
        tasks.webhook_process_task,
        tasks.webhook_process_batch_task,
    ):
        assert task.acks_late is True
        assert task.reject_on_worker_lost is True


def test_killed_after_the_authorization_the_rerun_charges_once(milestone):
    with mock.patch.object(tasks.payment_process_task, "apply_async"):
        payment = fund(milestone)
    with (
        mock.patch(
            "payments.services.processing._apply_intent_locked_tx", side_effect=WorkerKilled
        ),
        pytest.raises(WorkerKilled),
    ):
        tasks.payment_process_task.run(payment.pk)
    payment.refresh_from_db()
    assert payment.status == "processing"  # our side never committed the answer
    assert SandboxObject.objects.filter(kind="payment_intent").count() == 1

    tasks.payment_process_task.run(payment.pk)  # the redelivered task

    payment.refresh_from_db()
    assert payment.status == "completed"
    assert SandboxObject.objects.filter(kind="payment_intent").count() == 1
    assert JournalEntry.objects.filter(reference=f"fund:{payment.pk}").count() == 1


def test_killed_after_the_transfer_the_rerun_transfers_once(homeowner, contractor, milestone):
    fund(milestone)
    contractor.post(f"/api/v1/milestones/{milestone.pk}/submit")
    with (
        mock.patch("payments.services.payouts.payout_apply", side_effect=WorkerKilled),
        pytest.raises(WorkerKilled),
    ):
        from escrow import services as escrow_services

        escrow_services.milestone_approve(milestone_id=milestone.pk, actor=homeowner.user)
    payout = Payout.objects.get(milestone=milestone)
    assert payout.status == "pending"
    assert SandboxObject.objects.filter(kind="transfer").count() == 1

    tasks.payout_process_task.run(payout.pk)

    payout.refresh_from_db()
    assert payout.status == "paid"
    assert SandboxObject.objects.filter(kind="transfer").count() == 1
    assert JournalEntry.objects.filter(reference=f"payout-paid:{payout.pk}").count() == 1


def test_killed_while_processing_a_webhook_the_rerun_applies_it_once(milestone):
    from payments.gateways import sandbox
    from payments.models import WebhookEvent

    payment = fund(milestone, "pm_card_authenticationRequired")
    sandbox.take_outbox()
    sandbox.SandboxGateway().complete_authentication(payment_id=payment.gateway_payment_id)
    deliveries = sandbox.take_outbox()
    with (
        mock.patch("payments.services.intents.apply_intent", side_effect=WorkerKilled),
        pytest.raises(WorkerKilled),
    ):
        for delivery in deliveries:
            sandbox.deliver(delivery)
    assert WebhookEvent.objects.filter(status="received").count() == 1

    for row in WebhookEvent.objects.filter(status="received"):
        tasks.webhook_process_task.run(row.pk)

    payment.refresh_from_db()
    assert payment.status in ("authorized", "completed")
    services.payment_process(payment_id=payment.pk)
    payment.refresh_from_db()
    assert payment.status == "completed"
    assert JournalEntry.objects.filter(reference=f"fund:{payment.pk}").count() == 1


def test_killed_while_applying_a_batch_the_rerun_applies_each_event_once(homeowner, contractor):
    """The batch path (payments/services/webhook_batch.py) dies midway: nothing of the batch is
    left (one transaction), and the redelivered task applies every event exactly once."""
    from escrow import services as escrow_services
    from payments.models import WebhookEvent
    from tests.payments.test_webhook_batch import CASES, build

    three_in_one_project = [case for case in CASES if "in one project" in case[0]]
    _, milestones, payments, rows = build(
        "crash", homeowner.user, contractor.user, three_in_one_project
    )
    ids = [row.pk for row in rows]
    original, calls = escrow_services.FundingBatch.fund, []

    def fund_then_die(self, milestone_id):
        calls.append(milestone_id)
        if len(calls) == 2:
            raise WorkerKilled
        return original(self, milestone_id)

    with (
        mock.patch.object(escrow_services.FundingBatch, "fund", fund_then_die),
        pytest.raises(WorkerKilled),
    ):
        tasks.webhook_process_batch_task.run(ids)
    assert set(WebhookEvent.objects.filter(pk__in=ids).values_list("status", flat=True)) == {
        "received"
    }
    assert not JournalEntry.objects.filter(milestone__in=milestones).exists()

    tasks.webhook_process_batch_task.run(ids)  # the redelivery
    tasks.webhook_process_batch_task.run(ids)  # and once more: nothing changes
    for payment in payments:
        payment.refresh_from_db()
        assert payment.status == "completed"
        assert JournalEntry.objects.filter(reference=f"fund:{payment.pk}").count() == 1


KILL_SCRIPT = """
import os, sys
import django
django.setup()
from unittest import mock
from payments import tasks
def die(*args, **kwargs):
    os._exit(9)
with mock.patch("payments.services.processing._apply_intent_locked_tx", side_effect=die):
    tasks.payment_process_task.run(int(sys.argv[1]))
"""


@requires_postgres
@pytest.mark.postgres
def test_a_really_killed_worker_process_leaves_nothing_twice(milestone):
    with mock.patch.object(tasks.payment_process_task, "apply_async"):
        payment = fund(milestone)
    database = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": (
            f"postgres://{database['USER']}@{database['HOST'] or '127.0.0.1'}:"
            f"{database['PORT'] or 5432}/{database['NAME']}"
        ),
        "SANDBOX_WEBHOOK_DELIVERY": "off",
        "CELERY_TASK_ALWAYS_EAGER": "true",
        "PAYMENT_GATEWAY": "sandbox",
    }
    env.pop("REDIS_URL", None)

    worker = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(payment.pk)],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )

    assert worker.returncode == 9, worker.stderr.decode()[-2000:]
    payment.refresh_from_db()
    assert payment.status == "processing"
    assert SandboxObject.objects.filter(kind="payment_intent").count() == 1

    tasks.payment_process_task.run(payment.pk)

    payment.refresh_from_db()
    assert payment.status == "completed"
    assert SandboxObject.objects.filter(kind="payment_intent").count() == 1
    assert JournalEntry.objects.filter(reference=f"fund:{payment.pk}").count() == 1
    assert Payment.objects.count() == 1
