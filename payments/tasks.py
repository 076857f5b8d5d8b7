"""Celery tasks: ids in, one service call, retries only for transient errors (decided by the
services, which store the next attempt time). All acks_late + reject_on_worker_lost: a worker
killed mid-task gets the task redelivered, and the services are idempotent."""

from __future__ import annotations

import threading
from datetime import datetime

from celery import shared_task
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from payments import services

TASK_OPTIONS = {"acks_late": True, "reject_on_worker_lost": True}


def _again(task, args: list, retry_at: datetime | None, queue: str | None = None) -> None:
    """Run `task` again at `retry_at`: a short wait rides a countdown (or, in the embedded
    default, a timer thread); a long one stays in the database for beat (payments.work_due)."""
    if retry_at is None:
        return
    delay = max(0.0, (retry_at - timezone.now()).total_seconds())
    if delay > settings.PAYMENTS_RETRY_COUNTDOWN_MAX_SECONDS:
        return
    if settings.CELERY_TASK_ALWAYS_EAGER:
        if not settings.PAYMENTS_RETRY_TIMERS:
            return

        def run():
            try:
                task.apply(args=args)
            finally:
                close_old_connections()

        timer = threading.Timer(delay, run)
        timer.daemon = True
        timer.start()
        return
    options = {"countdown": delay}
    if queue:
        options["queue"] = queue
    task.apply_async(args=args, **options)


@shared_task(name="payments.payment_process", queue="default", **TASK_OPTIONS)
def payment_process_task(payment_id: int) -> str | None:
    progress = services.payment_process(payment_id=payment_id)
    if progress is None:
        return None
    from payments.models import Payment

    high = Payment.objects.filter(pk=payment_id, is_high_priority=True).exists()
    _again(payment_process_task, [payment_id], progress.retry_at, "high" if high else "default")
    return progress.status


@shared_task(name="payments.payment_cancel_at_gateway", queue="default", **TASK_OPTIONS)
def payment_cancel_at_gateway_task(payment_id: int) -> None:
    from payments.services.processing import payment_cancel_at_gateway

    payment_cancel_at_gateway(payment_id=payment_id)


@shared_task(name="payments.refund_process", queue="default", **TASK_OPTIONS)
def refund_process_task(refund_id: int) -> str | None:
    progress = services.refund_process(refund_id=refund_id)
    if progress is None:
        return None
    _again(refund_process_task, [refund_id], progress.retry_at)
    return progress.status


@shared_task(name="payments.payout_process", queue="default", **TASK_OPTIONS)
def payout_process_task(payout_id: int) -> str | None:
    progress = services.payout_process(payout_id=payout_id)
    if progress is None:
        return None
    _again(payout_process_task, [payout_id], progress.retry_at)
    return progress.status


@shared_task(name="payments.payout_start", queue="default", **TASK_OPTIONS)
def payout_start_task(milestone_id: int) -> None:
    services.payout_start(milestone_id=milestone_id)


@shared_task(name="payments.milestone_refund_start", queue="default", **TASK_OPTIONS)
def milestone_refund_start_task(milestone_id: int) -> None:
    services.milestone_refund_start(milestone_id=milestone_id)


@shared_task(name="payments.webhook_process", queue="webhooks", **TASK_OPTIONS)
def webhook_process_task(webhook_event_id: int) -> str | None:
    return services.webhook_process(webhook_event_id=webhook_event_id)


@shared_task(name="payments.webhook_process_batch", queue="webhooks", **TASK_OPTIONS)
def webhook_process_batch_task(webhook_event_ids: list[int]) -> int:
    """Rows gathered by the ingest path's batched enqueue (payments/enqueue.py), each in its
    own transaction; a rerun skips the ones already done."""
    return services.webhook_process_many(webhook_event_ids=webhook_event_ids)


@shared_task(name="payments.sandbox_deliver", queue="webhooks", **TASK_OPTIONS)
def sandbox_deliver_task(kind: str, body: str, header: str, object_id: str) -> None:
    """The sandbox gateway's sender, when a worker runs (see gateways/sandbox.py)."""
    from payments.gateways import sandbox

    sandbox.deliver(
        sandbox.Delivery(kind=kind, body=body.encode(), header=header, object_id=object_id)
    )


@shared_task(name="payments.work_due", queue="default")
def work_due_task() -> dict:
    return services.work_due()


@shared_task(name="payments.webhooks_due", queue="webhooks")
def webhooks_due_task() -> int:
    return len(services.webhooks_due())


@shared_task(name="payments.settlements_sweep", queue="default")
def settlements_sweep_task() -> dict:
    return services.settlements_sweep()


@shared_task(name="payments.reconcile", queue="default")
def reconcile_task() -> int:
    return services.reconcile().pk


@shared_task(name="payments.payment_methods_expiry", queue="default")
def payment_methods_expiry_task() -> dict:
    return services.payment_methods_expiry_check()
