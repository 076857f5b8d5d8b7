"""Garbage-collector settings for a server process that holds thousands of connections.

With CPython's default thresholds, full collections over every connection's objects stall the
event loop for seconds (bench/realtime.py; the figures are in docs/PERFORMANCE.md). The
collector cannot simply stay off (consumers and their tasks form reference cycles), so:
freeze what exists after start-up (Django, the URL conf, the app: never garbage) and collect
the young generation far less often, which makes full collections rare."""

import gc

from django.conf import settings


def gc_tune_for_connections() -> None:
    thresholds = settings.REALTIME_GC_THRESHOLDS
    if not thresholds:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
