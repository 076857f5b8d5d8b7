"""Publishing committed events to the channel layer (and, later, to subscribers of other
kinds). Publishing twice is harmless: clients dedupe by event id."""

import logging
from datetime import timedelta

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone

from realtime.models import Event

logger = logging.getLogger(__name__)


def publish_events(event_ids: list[int]) -> int:
    events = list(Event.objects.filter(pk__in=event_ids).order_by("id"))
    if not events:
        return 0
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(_send_all)(layer, events)
    Event.objects.filter(pk__in=[event.pk for event in events], published_at__isnull=True).update(
        published_at=timezone.now()
    )
    return len(events)


async def _send_all(layer, events: list[Event]) -> None:
    for event in events:
        message = {"type": "event.message", "event": event.as_message()}
        for channel in event.channels:
            await layer.group_send(channel, message)


def publish_unpublished(*, older_than: timedelta = timedelta(seconds=5), batch_size: int = 500):
    """The sweep: publish what a crash between commit and publish left behind."""
    cutoff = timezone.now() - older_than
    ids = list(
        Event.objects.filter(published_at__isnull=True, created_at__lt=cutoff)
        .order_by("id")
        .values_list("id", flat=True)[:batch_size]
    )
    return publish_events(ids) if ids else 0
