"""Publishing Celery tasks in batches from hot paths.

Publishing one Celery message costs about a millisecond or more of kombu's Python (measured in
docs/PERFORMANCE.md), as much as the rest of a webhook request or an event's sequencing. A
TaskBatcher takes ids on the caller's thread (a list append), and a sender thread per process
publishes one task per short window with every id gathered meanwhile, in chunks.

Only for work that a sweep recovers if the process dies with ids still in its buffer: the
callers' rows are committed before the ids are added, and beat finds what was never handed
off (payments.webhooks_due, realtime.events_dispatch_undispatched)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class TaskBatcher:
    """`task()` returns the Celery task (imported late), `window()` the seconds to gather."""

    def __init__(
        self, *, name: str, task: Callable, window: Callable[[], float], chunk: int = 100
    ) -> None:
        self.name = name
        self.task = task
        self.window = window
        self.chunk = chunk
        self.lock = threading.Lock()
        self.wakeup = threading.Event()
        self.ids: list[int] = []
        self.pid: int | None = None

    def add(self, *ids: int) -> None:
        with self.lock:
            if self.pid != os.getpid():  # first use, or a forked child: start its sender
                self.pid = os.getpid()
                self.ids = []
                threading.Thread(target=self._run, name=self.name, daemon=True).start()
            self.ids.extend(ids)
        self.wakeup.set()

    def _run(self) -> None:
        while True:
            self.wakeup.wait()
            time.sleep(self.window())
            with self.lock:
                # Clear before taking: an id appended after this is followed by a set() that
                # wakes the next round (clearing after taking could strand the last ids).
                self.wakeup.clear()
                ids, self.ids = self.ids, []
            task = self.task()
            for start in range(0, len(ids), self.chunk):
                try:
                    task.apply_async(args=[ids[start : start + self.chunk]])
                except Exception:
                    # The rows are committed; the caller's sweep hands them off again.
                    logger.exception("batched enqueue failed", extra={"batcher": self.name})
