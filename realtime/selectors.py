"""Reads of the event store, always filtered by who is asking."""

from realtime.models import Event


def event_list_for_user(*, user, after: int = 0, limit: int = 100) -> list[Event]:
    """Events the user may see with id > after, oldest first (operators see all)."""
    events = Event.objects.filter(pk__gt=after)
    if not user.is_staff:
        events = events.filter(recipients__user=user)
    return list(events.order_by("id")[:limit])


def event_list_for_aggregate(*, aggregate_type: str, aggregate_id, after: int = 0) -> list[Event]:
    """Events of one aggregate, oldest first. The caller has checked visibility."""
    return list(
        Event.objects.filter(
            aggregate_type=aggregate_type, aggregate_id=str(aggregate_id), pk__gt=after
        ).order_by("id")
    )
