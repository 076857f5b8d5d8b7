"""Reads the portal needs that no domain selector offers yet, each filtered by the viewer.

The event store's own selectors list events oldest-first from an id; the dashboard wants the
newest few and the id the page was rendered at, so the live client resumes from there."""

from django.db.models import Max

from realtime.models import Event


def _events_visible_to(user):
    events = Event.objects.all()
    if not user.is_staff:
        events = events.filter(recipients__user=user)
    return events


def recent_events_for_user(*, user, limit: int = 15) -> list[Event]:
    """The newest events the user may see, newest first (operators see all)."""
    return list(
        _events_visible_to(user).filter(position__isnull=False).order_by("-position")[:limit]
    )


def last_event_id_for_user(*, user) -> int:
    """The newest event id the user may see: the page's state includes everything up to it."""
    return _events_visible_to(user).aggregate(last=Max("position"))["last"] or 0
