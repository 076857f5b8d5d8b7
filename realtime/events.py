"""The event store's write side: `emit(...)` inside the caller's transaction, publish after.

Domain apps import only this module of realtime (write-only)."""

import logging
from collections.abc import Iterable
from contextlib import contextmanager

from django.db import connection, transaction
from django.utils import timezone

from common.bulk import values_chunks
from realtime.models import Event

logger = logging.getLogger(__name__)

# Operators' channels: only operators may subscribe (realtime.selectors.channel_is_visible_to).
OPS_CIRCUIT_BREAKERS = "ops.circuit_breakers"
OPERATOR_CHANNELS = (OPS_CIRCUIT_BREAKERS,)


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
    """Append an event in the current transaction; it is sequenced and published once that
    commits (realtime.sequencer), so its public id (`position`) is not known before then.

    `audience`: users (or ids) who may see it; `channels`: the WebSocket channels carrying it.
    Must run inside `transaction.atomic()` so the event commits or rolls back with the change.
    One INSERT and no lock: emitting transactions commit in parallel."""
    if not connection.in_atomic_block:
        raise RuntimeError("emit() must run inside the transaction that makes the change")
    aggregate_type, aggregate_id = aggregate
    channel_names = list(dict.fromkeys(channels))
    # Checked here, in the writer's transaction: a value the sequencer could not store later
    # would hold up the numbering of every other event behind it.
    if not all(isinstance(name, str) and 0 < len(name) <= _CHANNEL_MAX for name in channel_names):
        raise ValueError(f"channel names must be 1-{_CHANNEL_MAX} characters: {channel_names!r}")
    audience_ids = sorted({int(_user_id(user)) for user in audience})
    event = Event(
        type=type,
        aggregate_type=aggregate_type,
        aggregate_id=str(aggregate_id),
        data=data,
        channels=channel_names,
        audience=audience_ids,
        created_at=timezone.now(),
    )
    row = [
        event.type,
        event.aggregate_type,
        event.aggregate_id,
        _JSON.get_db_prep_save(event.data, connection),
        _JSON.get_db_prep_save(event.channels, connection),
        _JSON.get_db_prep_save(event.audience, connection),
        connection.ops.adapt_datetimefield_value(event.created_at),
    ]
    buffered = getattr(connection, "_realtime_emit_buffer", None)
    if buffered is not None:
        # emits_batched(): written with the rest of the block's events in one INSERT, in
        # this order; the id is not known until then (no caller of emit() reads it).
        buffered.append(row)
    else:
        # Plain SQL: every service emits several events per transaction, and the ORM spends
        # more CPU building an INSERT than the database spends running it.
        with connection.cursor() as cursor:
            cursor.execute(_INSERT + _VALUES + " RETURNING id", row)
            event.pk = cursor.fetchone()[0]
        event._state.adding = False
        event._state.db = connection.alias
    _sequence_after_commit()
    return event


_INSERT = (
    "INSERT INTO realtime_event (type, aggregate_type, aggregate_id, data, channels, audience, "
    "created_at) VALUES "
)
_VALUES = "(%s, %s, %s, %s, %s, %s, %s)"


@contextmanager
def emits_batched():
    """Inside a transaction: every emit() in the block is written when the block ends, in one
    INSERT per 500 events, in emit order (so the ids, and the public order the sequencer
    gives them, are what one INSERT each would have given). For loops emitting many events in
    one transaction (a worker applying a batch of webhooks). An error out of the block
    discards them with the block's transaction. Do not roll back a savepoint inside the block
    and carry on: the events emitted inside it would still be written."""
    if not connection.in_atomic_block:
        raise RuntimeError("emits_batched() must run inside the transaction that makes the change")
    if getattr(connection, "_realtime_emit_buffer", None) is not None:
        yield  # nested: the outer block writes them
        return
    connection._realtime_emit_buffer = rows = []
    try:
        yield
    finally:
        connection._realtime_emit_buffer = None
    for params, values in values_chunks(rows, 7):
        with connection.cursor() as cursor:
            cursor.execute(_INSERT + values, params)


_JSON = Event._meta.get_field("data")
_CHANNEL_MAX = 100  # EventChannel.channel


class _AfterCommit:
    """One on_commit callback per transaction, registered at its first emit, that runs the
    sequencer. The sequencer numbers and publishes every committed event still waiting, in
    insertion order, whichever transaction wrote it; so on_commit work registered between two
    emits (an escrow hook starting a payout, which commits and publishes its own events at
    once) still sees this transaction's earlier events published first."""

    def __init__(self) -> None:
        self.callback = self._run

    def _run(self) -> None:
        if getattr(connection, "_realtime_events", None) is self:
            connection._realtime_events = None
        if getattr(connection, "_realtime_sequencing_deferred", 0):
            return  # sequencing_deferred() runs one pass for the whole block
        _sequence_now()


def _sequence_now() -> None:
    from realtime.sequencer import events_sequence_and_publish

    try:
        events_sequence_and_publish()
    except Exception:
        # The sweep sequences them later; the change itself is committed and safe.
        logger.exception("event sequencing failed")


@contextmanager
def sequencing_deferred():
    """Run one sequencer pass when the block ends instead of one per transaction committed
    inside it. For loops of small transactions (a worker processing a batch of webhooks): the
    events still commit with each change and are published a little later, in one pass."""
    connection._realtime_sequencing_deferred = (
        getattr(connection, "_realtime_sequencing_deferred", 0) + 1
    )
    try:
        yield
    finally:
        connection._realtime_sequencing_deferred -= 1
        if not connection._realtime_sequencing_deferred and not connection.in_atomic_block:
            _sequence_now()


def _sequence_after_commit() -> None:
    pending = getattr(connection, "_realtime_events", None)
    # Still registered means still the same transaction (a rollback discards the callback).
    if pending is None or not any(
        entry[1] is pending.callback for entry in connection.run_on_commit
    ):
        pending = _AfterCommit()
        connection._realtime_events = pending
        transaction.on_commit(pending.callback)
