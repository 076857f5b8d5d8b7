"""Live events across server processes in embedded mode.

The in-memory channel layer reaches only the consumers of the process that published. With
`make serve` and no REDIS_URL there are several Daphne processes, and an action handled by one
must still reach clients connected to another. So, when the layer is the in-memory one, each
process tails the event store while it has connections: every REALTIME_TAIL_SECONDS it reads
events with a larger position than it has seen and sends them to its own groups. Positions
become visible in order (realtime.sequencer), so a position-ordered read never skips one;
consumers drop the copy of an event they already got from their own process. The same loop
reads the close messages for connections whose credential ended (accounts.ConnectionClose:
a logout, a password change, a deactivation, a revoked key handled by another process). With
Redis this is off: the pub/sub layer spans processes."""

import asyncio
import logging

from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer
from django.conf import settings

logger = logging.getLogger(__name__)
BATCH = 500


def latest_position() -> int:
    from realtime.models import Event

    return (
        Event.objects.filter(position__isnull=False)
        .order_by("-position")
        .values_list("position", flat=True)
        .first()
        or 0
    )


def latest_close_id() -> int:
    from accounts.models import ConnectionClose

    return ConnectionClose.objects.order_by("-id").values_list("id", flat=True).first() or 0


def _closes_after(after: int):
    from accounts.models import ConnectionClose

    return list(ConnectionClose.objects.filter(pk__gt=after).order_by("pk")[:BATCH])


def _events_after(after: int):
    from realtime.models import Event

    return list(Event.objects.filter(position__gt=after).order_by("position")[:BATCH])


class EventTailer:
    def __init__(self) -> None:
        self.connections = 0
        self.task: asyncio.Task | None = None

    def enabled_for(self, layer) -> bool:
        return isinstance(layer, InMemoryChannelLayer) and settings.REALTIME_TAIL_SECONDS > 0

    def attach(self, layer) -> None:
        if not self.enabled_for(layer):
            return
        self.connections += 1
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(layer))

    def detach(self, layer) -> None:
        if self.enabled_for(layer):
            self.connections = max(0, self.connections - 1)

    async def _run(self, layer) -> None:
        from accounts.connections import message_for
        from realtime.publishing import group_message

        cursor = await database_sync_to_async(latest_position)()
        close_cursor = await database_sync_to_async(latest_close_id)()
        while self.connections > 0:
            await asyncio.sleep(settings.REALTIME_TAIL_SECONDS)
            try:
                events = await database_sync_to_async(_events_after)(cursor)
                closes = await database_sync_to_async(_closes_after)(close_cursor)
            except Exception:  # a database hiccup must not end live delivery for good
                logger.exception("event tail read failed")
                continue
            for close in closes:
                message = message_for(reason=close.reason, sessions_only=close.sessions_only)
                await layer.group_send(close.group, message)
            if closes:
                close_cursor = closes[-1].pk
            for event in events:
                for channel in event.channels:
                    await layer.group_send(channel, group_message(event, channel))
            if events:
                cursor = events[-1].position


tailer = EventTailer()
