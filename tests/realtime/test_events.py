"""The event store: per-aggregate sequence, commit order, the feed API with its retained
window, pruning, and the sweeps for a crash between commit and publish/dispatch."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test import TestCase
from django.utils import timezone

from realtime.events import emit
from realtime.models import Event, EventChannel, EventRecipient, ReplayHorizon
from realtime.publishing import publish_unpublished
from realtime.services.dispatch import events_dispatch_undispatched
from realtime.services.retention import events_prune_replay_index
from tests.conftest import requires_postgres

pytestmark = pytest.mark.django_db


def emit_in_transaction(user, aggregate=("payment", 1), type="payment.status_updated"):
    with transaction.atomic():
        return emit(
            type,
            {"x": 1},
            aggregate=aggregate,
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

    body = homeowner.get(f"/api/v1/events?after={mine[0].pk}").json()

    assert [e["id"] for e in body["results"]] == [mine[1].pk, mine[2].pk]
    assert body["results"][0]["channels"] == [f"user.{homeowner.user.pk}.payments"]


def test_events_api_before_the_retained_window_is_410_resync_required(homeowner):
    events = [emit_in_transaction(homeowner.user) for _ in range(3)]
    ReplayHorizon.objects.create(pruned_through_id=events[1].pk)

    stale = homeowner.get(f"/api/v1/events?after={events[0].pk}")
    fresh = homeowner.get(f"/api/v1/events?after={events[1].pk}")

    assert stale.status_code == 410
    assert stale.json()["error"]["code"] == "resync_required"
    assert [e["id"] for e in fresh.json()["results"]] == [events[2].pk]


def test_pruning_drops_the_replay_index_of_old_events_but_keeps_the_events(homeowner, settings):
    settings.REALTIME_REPLAY_RETENTION = timedelta(days=30)
    old = [emit_in_transaction(homeowner.user) for _ in range(2)]
    recent = emit_in_transaction(homeowner.user)
    Event.objects.filter(pk__in=[e.pk for e in old]).update(
        created_at=timezone.now() - timedelta(days=31), published_at=timezone.now()
    )
    Event.objects.filter(pk=recent.pk).update(published_at=timezone.now())

    events_prune_replay_index()

    assert ReplayHorizon.objects.get().pruned_through_id == old[1].pk
    assert Event.objects.count() == 3
    assert set(EventChannel.objects.values_list("event_id", flat=True)) == {recent.pk}
    assert set(EventRecipient.objects.values_list("event_id", flat=True)) == {recent.pk}


def test_pruning_never_passes_an_unpublished_event(homeowner):
    old = [emit_in_transaction(homeowner.user) for _ in range(2)]
    Event.objects.filter(pk__in=[e.pk for e in old]).update(
        created_at=timezone.now() - timedelta(days=31)
    )
    Event.objects.filter(pk=old[0].pk).update(published_at=timezone.now())

    events_prune_replay_index()

    assert ReplayHorizon.objects.get().pruned_through_id == old[0].pk
    assert EventChannel.objects.filter(event_id=old[1].pk).exists()


def test_the_sweep_publishes_and_dispatches_what_a_crash_left_behind(homeowner):
    # Committed, but the process died before its on_commit publish ran.
    event = emit_in_transaction(homeowner.user, type="payment.failed")
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
def test_events_commit_in_id_order_on_postgresql():
    """A second emitting transaction waits at emit until the first commits, so no event can
    become visible before one with a smaller id (resume from an id never skips one)."""
    from tests.factories import HomeownerFactory

    user = HomeownerFactory()
    first_emitted = threading.Event()
    release_first = threading.Event()
    second_done = threading.Event()
    ids = {}

    def first():
        with transaction.atomic():
            ids["first"] = emit_in_transaction_inner(user)
            first_emitted.set()
            release_first.wait(10)
        connection.close()

    def second():
        first_emitted.wait(10)
        with transaction.atomic():
            ids["second"] = emit_in_transaction_inner(user)
        second_done.set()
        connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_emitted.wait(10)
    blocked_while_first_open = not second_done.wait(0.5)
    release_first.set()
    for thread in threads:
        thread.join(10)

    assert blocked_while_first_open
    assert ids["first"] < ids["second"]


def emit_in_transaction_inner(user) -> int:
    return emit(
        "payment.status_updated",
        {},
        aggregate=("payment", 9),
        audience=[user],
        channels=[f"user.{user.pk}.payments"],
    ).pk
