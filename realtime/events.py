"""The event store's write side: `emit(...)` inside the caller's transaction, publish after.

Domain apps import only this module of realtime (write-only)."""

import logging
from collections.abc import Iterable

from django.db import connection, transaction
from django.db.models import Max

from realtime.models import Event, EventChannel, EventRecipient

logger = logging.getLogger(__name__)

# Event ids come from a sequence, which hands them out at insert time, not at commit; two
# transactions could commit out of id order and a client resuming from the later id would skip
# the earlier one. A transaction-scoped advisory lock taken at the first emit makes commits
# happen in id order (it is held only from the emit to the commit, which services keep short).
_EVENT_ORDER_LOCK = 7_304_211


def _user_id(user) -> int:
    return user if isinstance(user, int) else user.pk


def emit(
    type: str,
    data: dict,
    *,
    aggregate: tuple[str, object],
    audience: Iterable,
    channels: Iterable[str],
) -> Event:
    """Append an event in the current transaction; it is published once that commits.

    `audience`: users (or ids) who may see it; `channels`: the WebSocket channels carrying it.
    Must run inside `transaction.atomic()` so the event commits or rolls back with the change.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("emit() must run inside the transaction that makes the change")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_EVENT_ORDER_LOCK])
    audience_ids = sorted({_user_id(user) for user in audience})
    channel_names = list(dict.fromkeys(channels))
    aggregate_type, aggregate_id = aggregate
    # Safe from races: the lock above (PostgreSQL) or the IMMEDIATE transaction (SQLite)
    # serialises every emitting transaction, and a unique constraint backs it up.
    previous = Event.objects.filter(
        aggregate_type=aggregate_type, aggregate_id=str(aggregate_id)
    ).aggregate(last=Max("sequence"))["last"]
    event = Event.objects.create(
        type=type,
        aggregate_type=aggregate_type,
        aggregate_id=str(aggregate_id),
        sequence=(previous or 0) + 1,
        data=data,
        channels=channel_names,
        audience=audience_ids,
    )
    EventRecipient.objects.bulk_create(
        [EventRecipient(event=event, user_id=user_id) for user_id in audience_ids]
    )
    EventChannel.objects.bulk_create(
        [EventChannel(event=event, channel=channel) for channel in channel_names]
    )
    _publish_after_commit(event)
    return event


class _TransactionEvents:
    """The events one transaction emitted, published together, in id order, by one
    on_commit callback registered at its first emit. One callback per event would let
    on_commit work registered between two emits (an escrow hook starting a payout, which
    commits and publishes its own events at once) publish later ids before earlier ones."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.callback = self._publish

    def _publish(self) -> None:
        from realtime.publishing import publish_events

        if getattr(connection, "_realtime_events", None) is self:
            connection._realtime_events = None
        try:
            # Read back rather than trust the objects: an event emitted in a savepoint that
            # was rolled back is not in the database and must not be published.
            publish_events(self.ids)
        except Exception:
            # The sweep publishes them later; the change itself is committed and safe.
            logger.exception("event publish failed", extra={"event_ids": self.ids})


def _publish_after_commit(event: Event) -> None:
    pending = getattr(connection, "_realtime_events", None)
    # Still registered means still the same transaction (a rollback discards the callback).
    if pending is None or not any(
        entry[1] is pending.callback for entry in connection.run_on_commit
    ):
        pending = _TransactionEvents()
        connection._realtime_events = pending
        transaction.on_commit(pending.callback)
    pending.ids.append(event.pk)
