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

from __future__ import annotations

import logging
import os
import threading
import time

from django.conf import settings

logger = logging.getLogger(__name__)


class _Batcher:
    def __init__(self):
        self.lock = threading.Lock()
        self.wakeup = threading.Event()
        self.ids: list[int] = []
        self.pid = None

    def add(self, event_row_id: int) -> None:
        with self.lock:
            if self.pid != os.getpid():  # first use, or a forked child: start its sender
                self.pid = os.getpid()
                self.ids = []
                threading.Thread(target=self._run, name="webhook-enqueue", daemon=True).start()
            self.ids.append(event_row_id)
        self.wakeup.set()

    def _run(self) -> None:
        from payments.tasks import webhook_process_batch_task

        while True:
            self.wakeup.wait()
            time.sleep(settings.PAYMENTS_WEBHOOK_BATCH_WINDOW)
            with self.lock:
                # Clear before taking: an id appended after this is followed by a set() that
                # wakes the next round (clearing after taking could strand the last ids).
                self.wakeup.clear()
                ids, self.ids = self.ids, []
            for start in range(0, len(ids), 100):
                try:
                    webhook_process_batch_task.apply_async(args=[ids[start : start + 100]])
                except Exception:
                    # Committed rows stay `received`; beat's webhooks_due enqueues them again.
                    logger.exception("webhook enqueue failed", extra={"count": len(ids)})


_batcher = _Batcher()


def enqueue_webhook(event_row_id: int) -> None:
    if settings.CELERY_TASK_ALWAYS_EAGER or settings.PAYMENTS_WEBHOOK_ENQUEUE != "batched":
        from payments.tasks import webhook_process_task

        webhook_process_task.apply_async(args=[event_row_id])
        return
    _batcher.add(event_row_id)
