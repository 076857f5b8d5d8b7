"""Publishing sequenced events (realtime.sequencer): to the channel layer (WebSocket groups)
at once, then, in a Celery task, to notifications and outgoing webhooks.

Publishing twice is harmless: each connection drops ids it has already sent, notifications are
unique per (user, key) and webhook deliveries per (endpoint, event); webhook receivers dedupe
by the `webhook-id` header."""

import asyncio
import logging
import os
import threading
from datetime import timedelta

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from common.batching import TaskBatcher
from realtime.models import Event

logger = logging.getLogger(__name__)


def group_message(event: Event, channel: str) -> dict:
    """What a consumer receives from group `channel` for `event`."""
    return {"type": "event.message", "channel": channel, "event": event.as_message()}


def publish_to_layer(events: list[Event]) -> None:
    """Send sequenced events to their channel groups, in the order given (position order).

    Raises what the channel layer raises; the events stay unpublished then and the sweep
    publishes them again (a second publish is harmless)."""
    layer = get_channel_layer()
    if layer is not None and events:
        _run_on_layer(layer, events)


def queue_dispatch(positions: list[int], *, dispatch: bool = True) -> None:
    """Queue the dispatch task, which marks the events published and derives their
    notifications and webhook deliveries (or only mark them, with `dispatch=False`).
    A broker failure is logged: the dispatch sweep derives them later."""
    if not dispatch:
        events_mark_published(event_ids=positions)
        return
    if not settings.CELERY_TASK_ALWAYS_EAGER and settings.REALTIME_DISPATCH_BATCH_WINDOW > 0:
        # With a broker: one task per few milliseconds for every process's events, off the
        # committing request's path (a lost buffer is found by the dispatch sweep).
        _dispatch_batcher.add(*positions)
        return
    try:
        # Marking them published is the task's first step: one write fewer on the
        # committing request's path.
        _dispatch_task().delay(positions)
    except Exception:
        logger.exception(
            "event dispatch enqueue failed; the sweep publishes them again",
            extra={"positions": [positions[0], positions[-1]]},
        )


def _dispatch_task():
    from realtime.tasks import events_dispatch_task

    return events_dispatch_task


_dispatch_batcher = TaskBatcher(
    name="event-dispatch-enqueue",
    task=_dispatch_task,
    window=lambda: settings.REALTIME_DISPATCH_BATCH_WINDOW,
    chunk=500,
)


def publish_events(positions: list[int], *, dispatch: bool = True) -> int:
    """Publish already sequenced events again (the sweep): channel layer, then dispatch.
    Runs outside any transaction. Raises what the channel layer raises."""
    events = list(Event.objects.filter(position__in=positions).order_by("position"))
    if not events:
        return 0
    publish_to_layer(events)
    queue_dispatch([event.position for event in events], dispatch=dispatch)
    return len(events)


def events_mark_published(*, event_ids: list[int]) -> None:
    with transaction.atomic():
        bookkeeping_commit_is_asynchronous()
        Event.objects.filter(position__in=event_ids, published_at__isnull=True).update(
            published_at=timezone.now()
        )


def bookkeeping_commit_is_asynchronous() -> None:
    """Let the current transaction commit without waiting for its WAL flush (PostgreSQL).

    Only for bookkeeping that a crash may lose harmlessly: a lost `published_at` means the
    sweep publishes again (receivers dedupe by id); a lost dispatch is re-derived, uniquely,
    by the dispatch sweep. Waiting for two flushes per event (publish mark, dispatch) capped the
    event rate below the bench's goal (docs/PERFORMANCE.md)."""
    if connection.vendor == "postgresql" and connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


async def _send_all(layer, events: list[Event]) -> None:
    messages = [
        (channel, group_message(event, channel)) for event in events for channel in event.channels
    ]
    if await _publish_pipelined(layer, messages):
        return
    for channel, message in messages:
        await layer.group_send(channel, message)


async def _publish_pipelined(layer, messages: list[tuple[str, dict]]) -> bool:
    """channels-redis pub/sub: every PUBLISH of the batch in one pipeline per Redis shard, on
    one connection, so in the order given (the order one group_send after another would have
    given, without waiting a round trip for each). A webhook batch's events fan out to some
    twenty groups each, and waiting for each PUBLISH was most of the publishing time
    (docs/PERFORMANCE.md). Uses the layer's own group naming, serializer and shard lock;
    returns False (the caller sends one by one) for any other layer, or a channels-redis
    whose internals differ from the 4.x ones this was written against."""
    from channels_redis.pubsub import RedisPubSubChannelLayer

    if not isinstance(layer, RedisPubSubChannelLayer):
        return False
    loop_layer = layer._get_layer()
    if not all(hasattr(loop_layer, name) for name in ("_get_group_channel_name", "_get_shard")):
        return False
    per_shard: dict[int, tuple[object, list]] = {}
    for group, message in messages:
        name = loop_layer._get_group_channel_name(group)
        shard = loop_layer._get_shard(name)
        per_shard.setdefault(id(shard), (shard, []))[1].append((name, layer.serialize(message)))
    for shard, _items in per_shard.values():
        if not all(hasattr(shard, name) for name in ("_lock", "_ensure_redis")):
            return False
    for shard, items in per_shard.values():
        async with shard._lock:
            shard._ensure_redis()
            pipe = shard._redis.pipeline(transaction=False)
            for name, payload in items:
                pipe.publish(name, payload)
            await pipe.execute()
    return True


def _run_on_layer(layer, events: list[Event]) -> None:
    if isinstance(layer, InMemoryChannelLayer):
        # The in-memory layer's queues belong to the event loop of this process's consumers;
        # async_to_sync from a worker thread runs the coroutine on that loop.
        async_to_sync(_send_all)(layer, events)
        return
    _publisher.run(
        lambda: _send_all(layer, events), timeout=settings.REALTIME_PUBLISH_TIMEOUT_SECONDS
    )


class _PublisherLoop:
    """One long-lived event loop thread per process for publishing from sync code.

    async_to_sync outside an event loop starts a new loop per call, and the Redis layer opens
    new connections for every loop: about a millisecond or more per publish, and connection
    churn. This keeps one loop (and so one set of Redis connections) per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid: int | None = None

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            # After a fork (Celery prefork) the thread did not come along: start a new one.
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="realtime-publisher", daemon=True
                )
                thread.start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    def run(self, coroutine_factory, *, timeout: float):
        future = asyncio.run_coroutine_threadsafe(coroutine_factory(), self._ensure_loop())
        return future.result(timeout=timeout)


_publisher = _PublisherLoop()


def publish_unpublished(*, older_than: timedelta = timedelta(seconds=60), batch_size: int = 500):
    """The sweep for a crash between commit and publish: sequence (and so publish) committed
    events that never got a position, then publish again sequenced events whose publication
    was not recorded after a while. Returns how many events it published."""
    from realtime.sequencer import events_sequence_and_publish

    count = len(events_sequence_and_publish())
    cutoff = timezone.now() - older_than
    positions = list(
        Event.objects.filter(
            published_at__isnull=True, position__isnull=False, created_at__lt=cutoff
        )
        .order_by("position")
        .values_list("position", flat=True)[:batch_size]
    )
    return count + (publish_events(positions) if positions else 0)
