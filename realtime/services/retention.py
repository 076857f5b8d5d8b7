"""Retention of the replay index.

Event rows are the audit trail and feed the timelines, so they are kept. What is pruned is
the fan-out index (EventChannel, EventRecipient rows) that resume and `GET /api/v1/events`
read: after REALTIME_REPLAY_RETENTION a client can no longer resume from there and gets
`resync_required` (WebSocket) or 410 `resync_required` (API) instead of a silent gap."""

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from realtime.models import Event, EventChannel, EventRecipient, ReplayHorizon


def events_prune_replay_index(*, batch_size: int = 5000, max_batches: int = 20) -> int:
    """Move the replay horizon up to the newest event older than the retention window, then
    delete index rows at or below it in bounded batches (the rest on the next run).

    The horizon moves first, so a concurrent resume from below it is told to resync rather
    than reading a half-deleted range. Never passes an unpublished event, nor one inside the
    window (an event written long ago but sequenced late has a high position)."""
    cutoff = timezone.now() - settings.REALTIME_REPLAY_RETENTION
    sequenced = Event.objects.filter(position__isnull=False)
    positions = sequenced.order_by("position").values_list("position", flat=True)
    upto = (
        sequenced.filter(created_at__lt=cutoff)
        .order_by("-position")
        .values_list("position", flat=True)
        .first()
    )
    for first_kept in (
        positions.filter(created_at__gte=cutoff).first(),
        positions.filter(published_at__isnull=True).first(),
    ):
        if first_kept is not None and upto is not None:
            upto = min(upto, first_kept - 1)
    with transaction.atomic():
        horizon, _ = ReplayHorizon.objects.select_for_update().get_or_create(pk=1)
        if upto is not None and upto > horizon.pruned_through_id:
            horizon.pruned_through_id = upto
            horizon.save()
        upto = horizon.pruned_through_id
    deleted = 0
    for model in (EventChannel, EventRecipient):
        for _ in range(max_batches):
            ids = list(
                model.objects.filter(event_id__lte=upto).values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                break
            deleted += model.objects.filter(pk__in=ids).delete()[0]
    return deleted
