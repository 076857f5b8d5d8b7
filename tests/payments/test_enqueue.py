"""The ingest path's batched enqueue (with a broker): accepted rows are handed to the workers
in one task per short window, and a batch task processes each row once."""

import time
from unittest import mock

import pytest

from payments import enqueue, tasks
from payments.gateways import sandbox
from payments.models import WebhookEvent
from tests.payments.helpers import fund

pytestmark = pytest.mark.django_db(transaction=True)


def test_batched_enqueue_publishes_one_task_for_a_burst(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.PAYMENTS_WEBHOOK_ENQUEUE = "batched"
    settings.PAYMENTS_WEBHOOK_BATCH_WINDOW = 0.05
    published = []
    with mock.patch.object(
        tasks.webhook_process_batch_task,
        "apply_async",
        side_effect=lambda args: published.append(args[0]),
    ):
        for row_id in (11, 12, 13):
            enqueue.enqueue_webhook(row_id)
        deadline = time.monotonic() + 5
        while not published and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)

    assert published == [[11, 12, 13]]


def test_inline_mode_publishes_one_task_per_row(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.PAYMENTS_WEBHOOK_ENQUEUE = "inline"
    with mock.patch.object(tasks.webhook_process_task, "apply_async") as apply_async:
        enqueue.enqueue_webhook(21)

    apply_async.assert_called_once_with(args=[21])


def test_a_batch_task_processes_each_row_once_even_when_run_twice(milestone):
    payment = fund(milestone, "pm_card_authenticationRequired")
    sandbox.take_outbox()
    sandbox.SandboxGateway().complete_authentication(payment_id=payment.gateway_payment_id)
    with mock.patch.object(tasks.webhook_process_task, "apply_async"):
        sandbox.flush()
    ids = list(WebhookEvent.objects.order_by("id").values_list("pk", flat=True))
    assert ids and not WebhookEvent.objects.exclude(status="received").exists()

    tasks.webhook_process_batch_task.run(ids)
    tasks.webhook_process_batch_task.run(ids)  # redelivered after a lost worker

    assert not WebhookEvent.objects.filter(status="received").exists()
    assert WebhookEvent.objects.get(type="payment_intent.amount_capturable_updated").attempts == 1
    payment.refresh_from_db()
    assert payment.status == "completed"


def test_a_failing_row_in_a_batch_is_parked_and_the_others_are_processed(project):
    from payments.services import webhooks as webhook_services
    from tests.escrow.factories import MilestoneFactory

    payments, deliveries = [], []
    for _ in range(2):
        payment = fund(
            MilestoneFactory(project=project, amount=10_000), "pm_card_authenticationRequired"
        )
        sandbox.take_outbox()
        sandbox.SandboxGateway().complete_authentication(payment_id=payment.gateway_payment_id)
        deliveries += sandbox.take_outbox()
        payments.append(payment)
    with mock.patch.object(tasks.webhook_process_task, "apply_async"):
        for delivery in deliveries:
            sandbox.deliver(delivery)
    ids = list(WebhookEvent.objects.order_by("id").values_list("pk", flat=True))
    assert len(ids) == 2
    real = webhook_services._process_locked

    def fail_the_first(webhook_event_id):
        if webhook_event_id == ids[0]:
            raise RuntimeError("deadlock detected")
        return real(webhook_event_id)

    with mock.patch.object(webhook_services, "_process_locked", side_effect=fail_the_first):
        tasks.webhook_process_batch_task.run(ids)

    first, second = WebhookEvent.objects.order_by("id")
    assert (first.status, second.status) == ("parked", "processed")
    assert "deadlock detected" in first.last_error
    assert payments[0].__class__.objects.get(pk=payments[0].pk).status == "verifying"
    assert payments[1].__class__.objects.get(pk=payments[1].pk).status == "completed"


def test_no_id_is_stranded_in_the_buffer_under_a_stream_of_adds(settings):
    """Every id added while the sender is publishing gets published without a later add."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.PAYMENTS_WEBHOOK_ENQUEUE = "batched"
    settings.PAYMENTS_WEBHOOK_BATCH_WINDOW = 0.001
    published = []
    with mock.patch.object(
        tasks.webhook_process_batch_task,
        "apply_async",
        side_effect=lambda args: published.extend(args[0]),
    ):
        for row_id in range(1, 2001):
            enqueue.enqueue_webhook(row_id)
            if row_id % 50 == 0:
                time.sleep(0.001)
        deadline = time.monotonic() + 5
        while len(published) < 2000 and time.monotonic() < deadline:
            time.sleep(0.01)

    assert sorted(published) == list(range(1, 2001))
