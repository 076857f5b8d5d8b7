"""The event store: per-aggregate sequence, positions in visibility order (the sequencer), the
feed API with its retained window, pruning, and the sweeps for a crash between commit and
publish/dispatch."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test import TestCase
from django.utils import timezone

from realtime.events import emit
from realtime.models import Event, EventChannel, EventRecipient, ReplayHorizon
from realtime.publishing import publish_unpublished
from realtime.sequencer import events_sequence_and_publish
from realtime.services.dispatch import events_dispatch_undispatched
from realtime.services.retention import events_prune_replay_index
from tests.conftest import requires_postgres

pytestmark = pytest.mark.django_db


def emit_in_transaction(user, aggregate=("payment", 1), type="payment.status_updated"):
    """Emit and commit (the on-commit sequencer runs, as in production); the stored event."""
    with TestCase.captureOnCommitCallbacks(execute=True), transaction.atomic():
        event = emit(
            type,
            {"x": 1},
            aggregate=aggregate,
            audience=[user],
            channels=[f"user.{user.pk}.payments"],
        )
    event.refresh_from_db()
    return event


def emit_uncommitted_callbacks(user, type="payment.status_updated"):
    """Emit in a transaction whose on-commit work never runs (the process died right after
    the commit): the event is stored but has no position."""
    with transaction.atomic():
        return emit(
            type,
            {"x": 1},
            aggregate=("payment", 1),
            audience=[user],
            channels=[f"user.{user.pk}.payments"],
        )


@pytest.mark.django_db(transaction=True)
def test_emit_outside_a_transaction_is_refused(homeowner):
    with pytest.raises(RuntimeError):
        emit("x.y", {}, aggregate=("payment", 1), audience=[homeowner.user], channels=[])
    assert not Event.objects.exists()


def test_sequence_counts_events_per_aggregate(homeowner):
    user = homeowner.user
    a1 = emit_in_transaction(user, ("payment", 1))
    b1 = emit_in_transaction(user, ("payment", 2))
    a2 = emit_in_transaction(user, ("payment", 1))

    assert [a1.sequence, b1.sequence, a2.sequence] == [1, 1, 2]


def test_events_api_lists_own_events_oldest_first(homeowner, stranger):
    mine = [emit_in_transaction(homeowner.user) for _ in range(3)]
    emit_in_transaction(stranger.user)

    body = homeowner.get(f"/api/v1/events?after={mine[0].position}").json()

    assert [e["id"] for e in body["results"]] == [mine[1].position, mine[2].position]
    assert body["results"][0]["channels"] == [f"user.{homeowner.user.pk}.payments"]


def test_events_api_before_the_retained_window_is_410_resync_required(homeowner):
    events = [emit_in_transaction(homeowner.user) for _ in range(3)]
    ReplayHorizon.objects.create(pruned_through_id=events[1].position)

    stale = homeowner.get(f"/api/v1/events?after={events[0].position}")
    fresh = homeowner.get(f"/api/v1/events?after={events[1].position}")

    assert stale.status_code == 410
    assert stale.json()["error"]["code"] == "resync_required"
    assert [e["id"] for e in fresh.json()["results"]] == [events[2].position]


def test_pruning_drops_the_replay_index_of_old_events_but_keeps_the_events(homeowner, settings):
    settings.REALTIME_REPLAY_RETENTION = timedelta(days=30)
    old = [emit_in_transaction(homeowner.user) for _ in range(2)]
    recent = emit_in_transaction(homeowner.user)
    Event.objects.filter(pk__in=[e.pk for e in old]).update(
        created_at=timezone.now() - timedelta(days=31), published_at=timezone.now()
    )
    Event.objects.filter(pk=recent.pk).update(published_at=timezone.now())

    events_prune_replay_index()

    assert ReplayHorizon.objects.get().pruned_through_id == old[1].position
    assert Event.objects.count() == 3
    assert set(EventChannel.objects.values_list("event_id", flat=True)) == {recent.position}
    assert set(EventRecipient.objects.values_list("event_id", flat=True)) == {recent.position}


def test_pruning_never_passes_an_unpublished_event(homeowner):
    old = [emit_in_transaction(homeowner.user) for _ in range(2)]
    Event.objects.filter(pk__in=[e.pk for e in old]).update(
        created_at=timezone.now() - timedelta(days=31)
    )
    Event.objects.filter(pk=old[0].pk).update(published_at=timezone.now())
    Event.objects.filter(pk=old[1].pk).update(published_at=None)  # its publication was lost

    events_prune_replay_index()

    assert ReplayHorizon.objects.get().pruned_through_id == old[0].position
    assert EventChannel.objects.filter(event_id=old[1].position).exists()


def test_the_sweep_publishes_and_dispatches_what_a_crash_left_behind(homeowner):
    # Committed, but the process died before its on_commit sequencing ran.
    event = emit_uncommitted_callbacks(homeowner.user, type="payment.failed")
    Event.objects.filter(pk=event.pk).update(created_at=timezone.now() - timedelta(minutes=1))

    with TestCase.captureOnCommitCallbacks(execute=True):
        published = publish_unpublished()
    event.refresh_from_db()

    assert published == 1
    assert event.published_at is not None
    assert event.dispatched_at is not None
    assert publish_unpublished() == 0
    assert events_dispatch_undispatched() == 0


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_positions_follow_visibility_not_insertion_and_writers_do_not_wait_on_postgresql():
    """Two emitting transactions overlap: the first to insert commits last. The second does
    not wait for the first (no lock through the commit), and positions are handed out as the
    events become visible: the late committer's event gets the larger position, so a client
    that resumed from the early one's position still receives it."""
    from tests.factories import HomeownerFactory

    user = HomeownerFactory()
    first_emitted = threading.Event()
    release_first = threading.Event()
    second_done = threading.Event()
    rows = {}

    def first():
        with transaction.atomic():
            rows["first"] = emit_in_transaction_inner(user)
            first_emitted.set()
            release_first.wait(10)
        connection.close()

    def second():
        first_emitted.wait(10)
        with transaction.atomic():
            rows["second"] = emit_in_transaction_inner(user)
        second_done.set()
        connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_emitted.wait(10)
    second_committed_while_first_open = second_done.wait(10)
    second_position_before_first_commit = Event.objects.get(pk=rows["second"]).position
    first_visible_before_its_commit = Event.objects.filter(pk=rows["first"]).exists()
    release_first.set()
    for thread in threads:
        thread.join(10)
    first_position = Event.objects.get(pk=rows["first"]).position

    assert second_committed_while_first_open
    assert rows["first"] < rows["second"]  # inserted first...
    assert not first_visible_before_its_commit
    assert second_position_before_first_commit is not None
    assert first_position > second_position_before_first_commit  # ...visible, and numbered, last
    assert list(EventChannel.objects.order_by("event_id").values_list("event_id", flat=True)) == [
        second_position_before_first_commit,
        first_position,
    ]


def emit_in_transaction_inner(user) -> int:
    return emit(
        "payment.status_updated",
        {},
        aggregate=("payment", 9),
        audience=[user],
        channels=[f"user.{user.pk}.payments"],
    ).pk


def test_positions_are_dense_and_per_aggregate_sequences_follow_them(homeowner):
    user = homeowner.user
    with transaction.atomic():
        pending = [emit_uncommitted_callbacks(user) for _ in range(3)]
    with transaction.atomic():
        pending.append(
            emit("x.y", {}, aggregate=("milestone", 4), audience=[user], channels=["project.1"])
        )

    assigned = events_sequence_and_publish()
    again = events_sequence_and_publish()
    stored = list(Event.objects.filter(pk__in=[e.pk for e in pending]).order_by("id"))

    assert assigned == [assigned[0] + n for n in range(4)]
    assert again == []
    assert [e.position for e in stored] == assigned
    assert [e.sequence for e in stored] == [1, 2, 3, 1]
    assert EventRecipient.objects.filter(event_id__in=assigned, user=user).count() == 4
    assert set(
        EventChannel.objects.filter(event_id=assigned[3]).values_list("channel", flat=True)
    ) == {"project.1"}


def test_an_unsequenced_event_is_invisible_to_feeds_until_the_sequencer_runs(homeowner):
    event = emit_uncommitted_callbacks(homeowner.user)

    before = homeowner.get("/api/v1/events?after=0").json()["results"]
    events_sequence_and_publish()
    after = homeowner.get("/api/v1/events?after=0").json()["results"]
    event.refresh_from_db()

    assert before == []
    assert [e["id"] for e in after] == [event.position]


def test_with_a_broker_dispatch_is_handed_off_in_one_task_per_window(settings):
    """Publishing a Celery message per commit cost more than sequencing the events; with a
    broker the sequenced positions of a burst go out in one dispatch task."""
    from unittest import mock

    from realtime import tasks
    from realtime.publishing import queue_dispatch

    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.REALTIME_DISPATCH_BATCH_WINDOW = 0.05
    published = []
    with mock.patch.object(
        tasks.events_dispatch_task, "apply_async", side_effect=lambda args: published.append(args)
    ):
        queue_dispatch([7, 8])
        queue_dispatch([9])
        deadline = time.monotonic() + 5
        while not published and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)

    assert published == [[[7, 8, 9]]]


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_writer_never_waits_for_the_sequencer_and_its_events_are_never_stranded(monkeypatch):
    """While one caller holds the sequencer, another transaction commits an event right after
    the holder's last read (which found less than a full batch, so the holder reads no more):
    the writer returns at once without numbering it, and the holder, re-checking after it
    lets go, numbers and publishes it anyway."""
    from realtime import sequencer
    from tests.factories import HomeownerFactory

    user = HomeownerFactory()
    real_batch = sequencer._sequence_batch
    writer = {}

    def write_one_more():
        with transaction.atomic():
            row = emit_in_transaction_inner(user)
        # (its on-commit sequencer call ran here and found the lock taken)
        writer["row"] = row
        writer["numbered_itself"] = Event.objects.get(pk=row).position is not None
        connection.close()

    def batch_then_commit_elsewhere():
        events = real_batch()
        if "row" not in writer:
            thread = threading.Thread(target=write_one_more)
            thread.start()
            thread.join(10)
        return events

    monkeypatch.setattr(sequencer, "_sequence_batch", batch_then_commit_elsewhere)
    with transaction.atomic():
        first = emit_in_transaction_inner(user)

    assert writer["numbered_itself"] is False
    positions = dict(Event.objects.values_list("pk", "position"))
    assert positions[first] is not None
    assert positions[writer["row"]] == positions[first] + 1


@pytest.mark.django_db(transaction=True)
def test_sequencing_deferred_numbers_a_loop_of_transactions_in_one_pass_at_the_end(monkeypatch):
    """A worker's batch of small transactions: each commits its events with its change, and
    one sequencer pass at the end of the block numbers all of them, in order."""
    from realtime import sequencer
    from realtime.events import sequencing_deferred
    from tests.factories import HomeownerFactory

    user = HomeownerFactory()
    passes = []
    real = sequencer.events_sequence_and_publish

    def counted(**kwargs):
        passes.append(real(**kwargs))
        return passes[-1]

    monkeypatch.setattr(sequencer, "events_sequence_and_publish", counted)
    rows = []
    with sequencing_deferred():
        for _ in range(3):
            with transaction.atomic():
                rows.append(emit_in_transaction_inner(user))
        during = [Event.objects.get(pk=row).position for row in rows]
    after = [Event.objects.get(pk=row).position for row in rows]

    assert during == [None, None, None]
    assert [len(assigned) for assigned in passes] == [3]
    assert after == [after[0], after[0] + 1, after[0] + 2]


def test_emit_refuses_a_channel_name_the_index_cannot_hold_and_writes_nothing(homeowner):
    with pytest.raises(ValueError), transaction.atomic():
        emit("x.y", {}, aggregate=("p", 1), audience=[homeowner.user], channels=["c" * 101])

    assert not Event.objects.exists()


def test_a_recipient_deleted_before_sequencing_does_not_hold_up_anyone_elses_events(homeowner):
    from tests.factories import HomeownerFactory

    leaving = HomeownerFactory()
    gone = emit_uncommitted_callbacks(leaving)
    kept = emit_uncommitted_callbacks(homeowner.user)
    leaving.delete()  # (its audience entry stays in the event row, the audit trail)

    assigned = events_sequence_and_publish()
    gone.refresh_from_db()
    kept.refresh_from_db()

    assert assigned == [gone.position, kept.position]
    assert not EventRecipient.objects.filter(event_id=gone.position).exists()
    assert EventRecipient.objects.filter(event_id=kept.position, user=homeowner.user).exists()


def test_a_channel_layer_failure_keeps_the_position_and_the_sweep_publishes_it(
    homeowner, monkeypatch
):
    """The numbering commits before the publish; if the layer refuses, the event keeps its
    position, nothing is dispatched yet, and the sweep publishes and dispatches it later."""
    from realtime import publishing

    real_publish = publishing.publish_to_layer
    sent = []

    def refuse(events):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(publishing, "publish_to_layer", refuse)
    event = emit_in_transaction(homeowner.user, type="payment.failed")
    assert event.position is not None
    assert event.published_at is None and event.dispatched_at is None

    def record(events):
        sent.extend(e.position for e in events)
        real_publish(events)

    monkeypatch.setattr(publishing, "publish_to_layer", record)
    with TestCase.captureOnCommitCallbacks(execute=True):
        published = publish_unpublished(older_than=timedelta(0))
    event.refresh_from_db()

    assert published == 1
    assert sent == [event.position]
    assert event.published_at is not None and event.dispatched_at is not None


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db
def test_on_postgresql_a_sequencer_pass_is_four_round_trips_whatever_the_batch():
    """Numbering and the replay index are one call of realtime_sequence_batch() (migration
    realtime/0004): lock, that call, unlock, the re-check. Losing it would put the per-row
    statements back on every committing request's path (docs/PERFORMANCE.md). The index rows
    are the same as the portable path writes."""
    from django.test.utils import CaptureQueriesContext

    from tests.factories import HomeownerFactory

    users = [HomeownerFactory(), HomeownerFactory()]
    rows = [emit_uncommitted_callbacks(users[n % 2]) for n in range(3)]

    with CaptureQueriesContext(connection) as queries:
        assigned = events_sequence_and_publish(dispatch=False)

    statements = [q["sql"] for q in queries.captured_queries]
    assert len(assigned) == 3
    # The pass (what follows it is dispatch=False marking the events published).
    assert [sql.split("(")[0] for sql in statements[:3]] == [
        "SELECT pg_try_advisory_lock",
        "SELECT * FROM realtime_sequence_batch",
        "SELECT pg_advisory_unlock",
    ]
    assert "IS NULL LIMIT 1" in statements[3]  # the re-check after the release
    assert not any("realtime_eventchannel" in sql for sql in statements)
    for event in rows:
        event.refresh_from_db()
        index = EventChannel.objects.filter(event_id=event.position)
        recipients = EventRecipient.objects.filter(event_id=event.position)
        assert list(index.values_list("channel", flat=True)) == event.channels
        assert list(recipients.values_list("user_id", flat=True)) == event.audience
    assert [event.sequence for event in rows] == [1, 2, 3]  # one aggregate: payment 1
