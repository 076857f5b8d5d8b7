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
    transaction.on_commit(lambda: _after_commit(event))
    return event


def _after_commit(event: Event) -> None:
    from realtime.publishing import publish_events

    try:
        publish_events([event])
    except Exception:
        # The sweep publishes it later; the change itself is committed and safe.
        logger.exception("event publish failed", extra={"event_id": event.pk})
