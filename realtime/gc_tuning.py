"""Garbage-collector settings for a server process that holds thousands of connections.

Measured with bench/realtime.py (5,000 connections on one Daphne): with CPython's default
thresholds, full collections over every connection's objects stalled the event loop for up to
2 s (commit-to-client p99 1.1-1.9 s); with the collector off the same run had p99 126 ms. The
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
