"""The sequencer: gives committed events their public position, in order, and publishes them.

Why: `emit` writes an event row in the caller's transaction, with an insertion id taken from a
sequence at insert time. Transactions commit in any order, so insertion ids become visible out
of order; a client that resumed from the larger of two could skip the smaller one committing
a moment later. Holding a global lock from the first emit to the commit (the first design)
kept ids in commit order but made every money-moving transaction commit one at a time.

Instead, after a transaction commits, its process runs this: under one lock it reads every
committed event that has no position yet, numbers them max(position)+1, +2, ... in insertion
order, writes the replay index (EventChannel, EventRecipient rows keyed by position), commits,
and publishes them to the channel layer, still under the lock, then releases it. So:

- positions are dense and become visible strictly in increasing order (a reader that sees N
  has seen, or can read, everything below N);
- live messages leave the server in position order across all processes (the lock covers the
  publish), so a client that saw N live has been sent every earlier event of its channels;
- the lock is held only for this short, batched step, never through a writer's transaction:
  writers commit in parallel and never wait for it; whoever holds it numbers everything that
  committed meanwhile (so under load one pass numbers many transactions' events).

The lock is a PostgreSQL session advisory lock, only ever tried (released in `finally`; a dead
process's connection releases it); on SQLite a process-local lock (the database's write lock
already serialises numbering transactions of several processes). A crash after a
commit and before this runs leaves rows without a position; the beat sweep
(`publish_unpublished`) sequences them.
"""

import logging
import threading
from contextlib import contextmanager

from django.db import connection, transaction

from common.bulk import values_chunks
from realtime.models import Event

logger = logging.getLogger(__name__)

_SEQUENCER_LOCK = 7_304_211
_process_lock = threading.RLock()
BATCH = 1000


@contextmanager
def _sequencer_lock():
    """Yields whether this caller holds the sequencer now (it never waits for it).

    PostgreSQL: a session advisory lock, which spans processes and threads (each thread has
    its own connection) and is re-entrant within one session. SQLite: a process lock (the
    database's write lock already orders the numbering transactions of several processes).
    One lock only, so that whoever refused a caller is also the one that re-checks after
    releasing it."""
    if connection.vendor != "postgresql":
        if not _process_lock.acquire(blocking=False):
            yield False
            return
        try:
            yield True
        finally:
            _process_lock.release()
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [_SEQUENCER_LOCK])
        held = cursor.fetchone()[0]
    if not held:
        yield False
        return
    try:
        yield True
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_SEQUENCER_LOCK])
        except Exception:
            # The connection is broken, and the session lock went with it; make sure the
            # pool does not hand out a connection in an unknown state.
            logger.exception("sequencer unlock failed; closing the connection")
            connection.close()


def events_sequence_and_publish(*, max_passes: int = 50, dispatch: bool = True) -> list[int]:
    """Number every committed event without a position and publish it, in order.

    Runs outside any transaction of the caller's (after commit, in the sweep, in tests).
    Never waits: if another process or thread holds the sequencer, it returns at once and
    that holder numbers these events too. No event is stranded: a holder checks for
    unnumbered events again after releasing the lock and takes it again if it finds any, and
    a caller that found the lock taken had committed before that check (it tried the lock
    after its commit, while the holder still held it). Idempotent; returns the positions
    this call assigned. A channel-layer failure is logged and leaves those events
    unpublished for the sweep; their positions stand. Then queues the dispatch
    (notifications, outgoing webhooks) of what was published, outside the lock."""
    from realtime.publishing import publish_to_layer, queue_dispatch

    published: list[int] = []
    assigned: list[int] = []
    for _ in range(max_passes):
        with _sequencer_lock() as held:
            if not held:
                break
            while True:
                events = _sequence_batch()
                if not events:
                    break
                positions = [event.position for event in events]
                assigned.extend(positions)
                try:
                    publish_to_layer(events)
                    published.extend(positions)
                except Exception:
                    logger.exception(
                        "event publish failed; the sweep publishes them again",
                        extra={"positions": [positions[0], positions[-1]]},
                    )
                if len(events) < BATCH or len(assigned) >= BATCH * max_passes:
                    # Not a full batch: nothing else was pending when it was read. Whatever
                    # committed since then is found by the check after the release below
                    # (its writer tried the lock while this one held it).
                    break
        if not _anything_pending():
            break
    if published:
        queue_dispatch(published, dispatch=dispatch)
    return assigned


def _user_table() -> str:
    from django.contrib.auth import get_user_model

    return connection.ops.quote_name(get_user_model()._meta.db_table)


def _anything_pending() -> bool:
    return Event.objects.filter(position__isnull=True).exists()


def _sequence_batch() -> list[Event]:
    """One numbering transaction: the caller holds the sequencer lock."""
    if connection.vendor == "postgresql":
        return _sequence_batch_pg()
    with transaction.atomic(), connection.cursor() as cursor:
        pending = _pending(cursor)
        if not pending:
            return []
        cursor.execute("SELECT COALESCE(MAX(position), 0) FROM realtime_event")
        last_position = cursor.fetchone()[0]
        last_sequence = _last_sequences(cursor, pending)
        rows, channel_rows, recipient_rows = [], [], []
        for offset, event in enumerate(pending, start=1):
            key = (event.aggregate_type, event.aggregate_id)
            last_sequence[key] = last_sequence.get(key, 0) + 1
            event.position = last_position + offset
            event.sequence = last_sequence[key]
            rows.append((event.position, event.sequence, event.pk))
            channel_rows.extend((event.position, channel) for channel in event.channels)
            recipient_rows.extend((event.position, user_id) for user_id in event.audience)
        # One statement per chunk instead of one per row (VALUES columns are column1, ...
        # on both PostgreSQL and SQLite; only placeholders are formatted into the SQL).
        for chunk, values in values_chunks(rows, 3):
            cursor.execute(
                "UPDATE realtime_event SET position = v.column1, sequence = v.column2 "  # noqa: S608
                f"FROM (VALUES {values}) AS v WHERE realtime_event.id = v.column3",
                chunk,
            )
        for chunk, values in values_chunks(channel_rows, 2):
            cursor.execute(
                f"INSERT INTO realtime_eventchannel (event_id, channel) VALUES {values}",  # noqa: S608
                chunk,
            )
        for chunk, values in values_chunks(recipient_rows, 2):
            # Only users that exist: a user deleted between the emit and this step must not
            # fail the numbering of everyone's events (the row keeps its audience list).
            cursor.execute(
                "INSERT INTO realtime_eventrecipient (event_id, user_id) "  # noqa: S608
                f"SELECT v.column1, u.id FROM (VALUES {values}) AS v "
                f"JOIN {_user_table()} u ON u.id = v.column2",
                chunk,
            )
    return pending


_PENDING = (
    "SELECT id, type, aggregate_type, aggregate_id, data, channels, audience, created_at "
    "FROM realtime_event WHERE position IS NULL ORDER BY id LIMIT %s"
)
_FIELDS = ["id", "type", "aggregate_type", "aggregate_id", "data", "channels", "audience"]
_FIELDS += ["created_at"]


def _sequence_batch_pg() -> list[Event]:
    """PostgreSQL: the same pass as one call of realtime_sequence_batch() (realtime/sql/),
    its own transaction when the caller is not in one."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM realtime_sequence_batch(%s)", [BATCH])
        return _events(cursor.fetchall(), [*_FIELDS, "position", "sequence"])


def _pending(cursor) -> list[Event]:
    """Committed events without a position, oldest first (served by the partial index
    event_unsequenced). Plain SQL: this runs under the sequencer lock, once per commit."""
    cursor.execute(_PENDING, [BATCH])
    return _events(cursor.fetchall(), _FIELDS)


def _events(rows, fields: list[str]) -> list[Event]:
    """Event instances from rows whose columns are `fields`, in any order (from_db wants the
    model's field order)."""
    if not rows:
        return []
    json_field = Event._meta.get_field("data")
    date_field = Event._meta.get_field("created_at")
    date_converters = connection.ops.get_db_converters(date_field.get_col(Event._meta.db_table))
    ordered = [f.attname for f in Event._meta.concrete_fields if f.attname in fields]
    events = []
    for row in rows:
        values = dict(zip(fields, row, strict=True))
        for name in ("data", "channels", "audience"):
            values[name] = json_field.from_db_value(values[name], None, connection)
        for converter in date_converters:
            values["created_at"] = converter(values["created_at"], None, connection)
        events.append(Event.from_db(connection.alias, ordered, [values[n] for n in ordered]))
    return events


def _last_sequences(cursor, events: list[Event]) -> dict[tuple[str, str], int]:
    """The highest per-aggregate sequence already assigned, for the aggregates in `events`
    (served by the unique (aggregate_type, aggregate_id, sequence) index)."""
    keys = list(dict.fromkeys((event.aggregate_type, event.aggregate_id) for event in events))
    found: dict[tuple[str, str], int] = {}
    for start in range(0, len(keys), 200):
        chunk = keys[start : start + 200]
        values = ", ".join(["(%s, %s)"] * len(chunk))  # placeholders only, no data
        cursor.execute(
            "SELECT aggregate_type, aggregate_id, MAX(sequence) FROM realtime_event "  # noqa: S608
            "WHERE sequence IS NOT NULL "
            f"AND (aggregate_type, aggregate_id) IN (VALUES {values}) "
            "GROUP BY aggregate_type, aggregate_id",
            [part for key in chunk for part in key],
        )
        found.update({(row[0], row[1]): row[2] for row in cursor.fetchall()})
    return found
