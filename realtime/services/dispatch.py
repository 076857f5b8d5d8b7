"""After publishing: derive notifications and webhook deliveries from committed events."""

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from realtime.models import Event
from realtime.publishing import bookkeeping_commit_is_asynchronous, events_mark_published
from realtime.services.notifications import notifications_create_for_event
from realtime.services.webhooks import webhook_deliveries_create_for_event


def events_dispatch(*, event_ids: list[int]) -> int:
    """Mark the events published (they were, just before this was queued), then create each
    one's notifications and webhook deliveries, once, in order. `event_ids` are public event
    ids (positions).

    Idempotent: events already dispatched are skipped and the derived rows are unique, so a
    second run (a re-published event, the sweep racing the task) adds nothing. Each event is
    its own transaction so a bad one cannot hold back the rest."""
    events_mark_published(event_ids=event_ids)
    done = 0
    events = Event.objects.filter(position__in=event_ids, dispatched_at__isnull=True).order_by(
        "position"
    )
    for event in events:
        with transaction.atomic():
            # Safe to lose in a crash: nothing is marked dispatched then, and the sweep
            # derives the same unique rows again.
            bookkeeping_commit_is_asynchronous()
            notifications_create_for_event(event=event)
            webhook_deliveries_create_for_event(event=event)
            Event.objects.filter(pk=event.pk, dispatched_at__isnull=True).update(
                dispatched_at=timezone.now()
            )
        done += 1
    return done


def events_dispatch_undispatched(
    *, older_than: timedelta = timedelta(seconds=30), batch_size: int = 500
) -> int:
    """The sweep for a lost dispatch task: published events not dispatched after a while."""
    cutoff = timezone.now() - older_than
    ids = list(
        Event.objects.filter(
            dispatched_at__isnull=True, published_at__isnull=False, created_at__lt=cutoff
        )
        .order_by("position")
        .values_list("position", flat=True)[:batch_size]
    )
    return events_dispatch(event_ids=ids) if ids else 0
