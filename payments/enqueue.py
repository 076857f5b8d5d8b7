"""Handing inbox rows to the workers from the ingest path.

`inline` (Celery eager, tests, the embedded default): one `payments.webhook_process` task per
row, published before the response. `batched` (with a broker; PAYMENTS_WEBHOOK_ENQUEUE): the
request only appends the committed row's id to a per-process buffer and answers; a sender
thread publishes one `payments.webhook_process_batch` task per PAYMENTS_WEBHOOK_BATCH_WINDOW
(a few milliseconds) with every id gathered meanwhile. Publishing a Celery message costs about
as much as the rest of the request (measured in docs/PERFORMANCE.md), so this is what lets
two Daphne processes accept more deliveries per second. Nothing is lost that was
acknowledged: the row is committed before the 2xx, and rows still `received` a minute later
(a process that died with ids in its buffer) are enqueued again by beat
(payments.webhooks_due)."""

import logging

from django.conf import settings

from common.batching import TaskBatcher

logger = logging.getLogger(__name__)


def _batch_task():
    from payments.tasks import webhook_process_batch_task

    return webhook_process_batch_task


_batcher = TaskBatcher(
    name="webhook-enqueue",
    task=_batch_task,
    window=lambda: settings.PAYMENTS_WEBHOOK_BATCH_WINDOW,
)


def enqueue_webhook(event_row_id: int) -> None:
    """The one way an inbox row reaches the workers: after ingest commits, and from the beat
    sweep (webhooks_due) for parked rows due again and received rows never processed."""
    if settings.CELERY_TASK_ALWAYS_EAGER or settings.PAYMENTS_WEBHOOK_ENQUEUE != "batched":
        from payments.tasks import webhook_process_task

        webhook_process_task.apply_async(args=[event_row_id])
        return
    _batcher.add(event_row_id)


def enqueue_busy(event_row_ids: list[int]) -> bool:
    """Try rows another transaction held again in PAYMENTS_WEBHOOK_BUSY_RETRY_SECONDS, as one
    batch task. False when there is no broker to wait in (Celery eager: the caller processes
    them now, waiting for the lock) or the broker refused (the same; the sweep is the last
    resort either way)."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return False
    try:
        _batch_task().apply_async(
            args=[event_row_ids], countdown=settings.PAYMENTS_WEBHOOK_BUSY_RETRY_SECONDS
        )
    except Exception:
        logger.exception("busy webhook re-enqueue failed", extra={"events": len(event_row_ids)})
        return False
    return True
