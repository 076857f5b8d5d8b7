"""The /ws/ endpoint through the real ASGI stack (auth middleware, router, consumer) with
Channels' communicator: auth, origin, channel authorization, live delivery, resume, presence,
slow clients, revoked keys."""

import pytest
from channels.db import database_sync_to_async
from django.db import transaction
from django.test import Client

from accounts.models import ApiKey
from accounts.services import api_key_revoke
from realtime import selectors
from realtime.consumers import CLOSE_AUTH_REVOKED, CLOSE_SEND_QUEUE_OVERFLOW
from realtime.events import emit
from realtime.models import ReplayHorizon
from tests.escrow.factories import MilestoneFactory, ProjectFactory
from tests.factories import HomeownerFactory, OperatorFactory, raw_key_for
from tests.realtime.conftest import (
    ORIGIN,
    aemit,
    application,
    connect,
    emit_committed,
    events_received,
    nothing_more,
    receive,
    receive_until,
    subscribe,
    with_scope,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@database_sync_to_async
def make_user(factory=HomeownerFactory):
    user = factory()
    return user, raw_key_for(user)


@database_sync_to_async
def make_project():
    project = ProjectFactory()
    milestone = MilestoneFactory(project=project)
    homeowner_key = raw_key_for(project.homeowner)
    contractor_key = raw_key_for(project.contractor)
    return project, milestone, homeowner_key, contractor_key


@database_sync_to_async
def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


# --- handshake -------------------------------------------------------------------------------


async def test_handshake_without_credentials_is_refused():
    communicator = await connect(headers=[ORIGIN], expect=False)
    await communicator.disconnect()


async def test_handshake_with_an_unknown_or_revoked_token_is_refused():
    user, key = await make_user()
    await connect(key="esk_nothing_here", expect=False)
    api_key = await database_sync_to_async(ApiKey.objects.get)(user=user)
    await database_sync_to_async(api_key_revoke)(api_key_id=api_key.pk, actor=user)
    await connect(key=key, expect=False)


async def test_origin_outside_allowed_hosts_is_refused_even_with_a_valid_token():
    _, key = await make_user()
    await connect(key=key, headers=[(b"origin", b"https://evil.example")], expect=False)
    await connect(key=key, headers=[(b"origin", b"null")], expect=False)


async def test_session_connection_needs_an_allowed_origin():
    user, _ = await make_user()
    cookie = (b"cookie", await session_cookie(user))

    await connect(headers=[cookie], expect=False)
    await connect(headers=[cookie, (b"origin", b"https://evil.example")], expect=False)
    communicator = await connect(headers=[cookie, ORIGIN])

    event = await aemit(channels=[f"user.{user.pk}.payments"], audience=[user])
    assert (await events_received(communicator, 1))[0]["id"] == event.position
    await communicator.disconnect()


async def test_token_client_without_origin_gets_its_payments_channel_by_default():
    user, key = await make_user()
    communicator = await connect(key=key)

    event = await aemit(
        "payment.completed",
        {"payment_id": 7, "amount": 500, "currency": "usd", "status": "completed"},
        channels=[f"user.{user.pk}.payments"],
        audience=[user],
    )

    message = (await events_received(communicator, 1))[0]
    assert message == {
        "type": "payment.completed",
        "id": event.position,
        "channel": f"user.{user.pk}.payments",
        "data": {"payment_id": 7, "amount": 500, "currency": "usd", "status": "completed"},
        "timestamp": event.timestamp,
    }
    await communicator.disconnect()


async def test_ping_gets_pong_and_garbage_gets_an_error():
    _, key = await make_user()
    communicator = await connect(key=key)

    await communicator.send_json_to({"type": "ping"})
    assert await receive(communicator) == {"type": "pong"}
    await communicator.send_to(text_data="not json")
    assert await receive(communicator) == {"type": "error", "code": "invalid_message"}
    await communicator.send_json_to({"type": "subscribe", "channels": "project.1"})
    assert await receive(communicator) == {"type": "error", "code": "invalid_message"}
    await communicator.disconnect()


# --- authorization ---------------------------------------------------------------------------


async def test_forbidden_channels_get_an_error_each_and_never_data():
    project, milestone, _, _ = await make_project()
    stranger, key = await make_user()
    other, _ = await make_user()
    communicator = await connect(key=key)
    asked = [
        f"project.{project.pk}",
        f"milestone.{milestone.pk}",
        f"user.{other.pk}.payments",
        f"user.{stranger.pk}.milestones",
        "payment.999999",
        "dispute.1",
        "nonsense",
    ]

    await communicator.send_json_to({"type": "subscribe", "channels": asked})
    errors = [await receive(communicator) for _ in range(6)]
    subscribed = await receive(communicator)

    assert errors == [
        {"type": "error", "code": "forbidden", "channel": channel}
        for channel in asked
        if channel != f"user.{stranger.pk}.milestones"
    ]
    assert subscribed == {"type": "subscribed", "channels": [f"user.{stranger.pk}.milestones"]}
    await aemit(
        channels=[f"project.{project.pk}", f"milestone.{milestone.pk}"],
        audience=[project.homeowner_id, project.contractor_id],
    )
    await aemit(channels=[f"user.{other.pk}.payments"], audience=[other])
    marker = await aemit(channels=[f"user.{stranger.pk}.milestones"], audience=[stranger])
    assert [m["id"] for m in await events_received(communicator, 1)] == [marker.position]
    await communicator.disconnect()


async def test_both_parties_see_each_others_project_events_live():
    project, milestone, homeowner_key, contractor_key = await make_project()
    homeowner = await connect(key=homeowner_key)
    contractor = await connect(key=contractor_key)
    await subscribe(homeowner, [f"project.{project.pk}"])
    await subscribe(contractor, [f"milestone.{milestone.pk}"])

    event = await aemit(
        "milestone.status_updated",
        {"milestone_id": milestone.pk, "project_id": project.pk, "status": "submitted"},
        channels=[f"milestone.{milestone.pk}", f"project.{project.pk}"],
        audience=[project.homeowner_id, project.contractor_id],
        aggregate=("milestone", milestone.pk),
    )

    seen_by_homeowner = (await events_received(homeowner, 1))[0]
    seen_by_contractor = (await events_received(contractor, 1))[0]
    assert (seen_by_homeowner["id"], seen_by_homeowner["channel"]) == (
        event.position,
        f"project.{project.pk}",
    )
    assert (seen_by_contractor["id"], seen_by_contractor["channel"]) == (
        event.position,
        f"milestone.{milestone.pk}",
    )
    await homeowner.disconnect()
    await contractor.disconnect()


async def test_operator_may_subscribe_to_any_project():
    project, _, _, _ = await make_project()
    _, key = await make_user(OperatorFactory)
    communicator = await connect(key=key)

    reply = await subscribe(communicator, [f"project.{project.pk}"])

    assert reply["channels"] == [f"project.{project.pk}"]
    await communicator.disconnect()


@database_sync_to_async
def breaker_opens(name: str) -> None:
    from payments import breaker

    for _ in range(10):
        breaker.record(name, success=False)


async def test_operators_get_circuit_breaker_alerts_live_and_no_one_else_may_subscribe(settings):
    """Breaker events went to a channel the WebSocket refused to everyone. Operators may now
    subscribe to ops.circuit_breakers and see a breaker open live; anyone else gets the
    contract's forbidden error for it and nothing of what it carries."""
    from payments import breaker

    settings.PAYMENTS_BREAKER_BACKEND = "database"
    breaker._stores.clear()
    _, operator_key = await make_user(OperatorFactory)
    homeowner, homeowner_key = await make_user()
    operator = await connect(key=operator_key)
    stranger = await connect(key=homeowner_key)

    assert (await subscribe(operator, ["ops.circuit_breakers"]))["channels"] == [
        "ops.circuit_breakers"
    ]
    await stranger.send_json_to({"type": "subscribe", "channels": ["ops.circuit_breakers"]})
    assert await receive(stranger) == {
        "type": "error",
        "code": "forbidden",
        "channel": "ops.circuit_breakers",
    }
    assert await receive(stranger) == {"type": "subscribed", "channels": []}
    await breaker_opens("sandbox:ws-test")

    alert = (await events_received(operator, 1))[0]
    assert (alert["type"], alert["channel"]) == ("circuit_breaker.opened", "ops.circuit_breakers")
    assert alert["data"]["name"] == "sandbox:ws-test" and alert["data"]["state"] == "open"
    marker = await aemit(channels=[f"user.{homeowner.pk}.payments"], audience=[homeowner])
    assert [m["id"] for m in await events_received(stranger, 1)] == [marker.position]
    await operator.disconnect()
    await stranger.disconnect()
    breaker._stores.clear()


async def test_an_event_on_several_subscribed_channels_arrives_once():
    project, milestone, homeowner_key, _ = await make_project()
    communicator = await connect(key=homeowner_key)
    await subscribe(
        communicator,
        [
            f"project.{project.pk}",
            f"milestone.{milestone.pk}",
            f"user.{project.homeowner_id}.milestones",
        ],
    )
    channels = [
        f"milestone.{milestone.pk}",
        f"project.{project.pk}",
        f"user.{project.homeowner_id}.milestones",
    ]
    first = await aemit(channels=channels, audience=[project.homeowner_id])
    second = await aemit(channels=channels, audience=[project.homeowner_id])

    received = await events_received(communicator, 2)

    assert [m["id"] for m in received] == [first.position, second.position]
    await communicator.disconnect()


async def test_unsubscribe_stops_delivery():
    user, key = await make_user()
    communicator = await connect(key=key)
    await subscribe(communicator, [f"user.{user.pk}.milestones"])

    await communicator.send_json_to(
        {"type": "unsubscribe", "channels": [f"user.{user.pk}.milestones"]}
    )
    reply = await receive(communicator)
    await aemit(channels=[f"user.{user.pk}.milestones"], audience=[user])
    marker = await aemit(channels=[f"user.{user.pk}.payments"], audience=[user])

    assert reply == {"type": "unsubscribed", "channels": [f"user.{user.pk}.milestones"]}
    assert [m["id"] for m in await events_received(communicator, 1)] == [marker.position]
    await communicator.disconnect()


# --- resume ----------------------------------------------------------------------------------


async def test_resume_after_a_disconnect_sends_exactly_the_missed_events_in_order_then_live():
    project, _milestone, homeowner_key, _ = await make_project()
    channel = f"project.{project.pk}"
    audience = [project.homeowner_id, project.contractor_id]
    communicator = await connect(key=homeowner_key)
    await subscribe(communicator, [channel])
    seen = await aemit(channels=[channel], audience=audience)
    last_seen_id = (await events_received(communicator, 1))[0]["id"]
    await communicator.disconnect()

    missed = [await aemit(channels=[channel], audience=audience) for _ in range(4)]
    await aemit(channels=["project.0"], audience=audience)  # another channel: not replayed
    communicator = await connect(key=homeowner_key)
    reply = await subscribe(communicator, [channel], last_event_id=last_seen_id)
    replayed = await events_received(communicator, 4)
    live = await aemit(channels=[channel], audience=audience)
    after = await events_received(communicator, 1)

    assert last_seen_id == seen.position
    assert reply == {"type": "subscribed", "channels": [channel]}
    assert [m["id"] for m in replayed] == [event.position for event in missed]
    assert [m["id"] for m in after] == [live.position]
    await communicator.disconnect()


async def test_resume_seam_has_no_gap_and_no_duplicate(monkeypatch):
    """Events committed while the replay reads the store: one published before the read
    (so it is both replayed and live), one after (live only). Each arrives once, in order."""
    user, key = await make_user()
    channel = f"user.{user.pk}.milestones"
    before = await aemit(channels=[channel], audience=[user])
    original = selectors.event_list_for_channels
    emitted = []

    def read_with_concurrent_commits(**kwargs):
        if not emitted:
            emitted.append(emit_sync(channel, user))  # committed and published before the read
            rows = original(**kwargs)
            emitted.append(emit_sync(channel, user))  # committed after the read
            return rows
        return original(**kwargs)

    monkeypatch.setattr(selectors, "event_list_for_channels", read_with_concurrent_commits)
    communicator = await connect(key=key)
    await subscribe(communicator, [channel], last_event_id=before.position - 1)

    received = await events_received(communicator, 3)

    assert [m["id"] for m in received] == [
        before.position,
        emitted[0].position,
        emitted[1].position,
    ]
    assert await nothing_more(communicator)
    await communicator.disconnect()


def emit_sync(channel, user):
    return emit_committed(channels=[channel], audience=[user])


async def test_resume_from_before_the_retained_window_gets_resync_required():
    user, key = await make_user()
    channel = f"user.{user.pk}.milestones"
    events = [await aemit(channels=[channel], audience=[user]) for _ in range(3)]
    await database_sync_to_async(ReplayHorizon.objects.create)(pruned_through_id=events[1].position)
    communicator = await connect(key=key)

    await subscribe(communicator, [channel], last_event_id=events[0].position)
    message = await receive(communicator)
    live = await aemit(channels=[channel], audience=[user])

    assert message == {
        "type": "resync_required",
        "channels": [channel],
        "last_event_id": events[0].position,
    }
    assert [m["id"] for m in await events_received(communicator, 1)] == [live.position]
    await communicator.disconnect()


# --- presence --------------------------------------------------------------------------------


async def test_presence_on_a_project_channel_shows_who_is_online():
    project, _, homeowner_key, contractor_key = await make_project()
    channel = f"project.{project.pk}"
    homeowner = await connect(key=homeowner_key)
    contractor = await connect(key=contractor_key)
    await subscribe(homeowner, [channel])
    first = await receive_until(homeowner, lambda m: m["type"] == "presence")

    await subscribe(contractor, [channel])
    joined = await receive_until(homeowner, lambda m: m["type"] == "presence")
    await contractor.disconnect()
    left = await receive_until(homeowner, lambda m: m["type"] == "presence")

    homeowner_info = {"id": project.homeowner_id, "username": project.homeowner.username}
    contractor_info = {"id": project.contractor_id, "username": project.contractor.username}
    assert first == {
        "type": "presence",
        "channel": channel,
        "action": "joined",
        "user": homeowner_info,
        "online": [homeowner_info],
    }
    assert joined["action"] == "joined"
    assert joined["user"] == contractor_info
    assert sorted(joined["online"], key=lambda u: u["id"]) == sorted(
        [homeowner_info, contractor_info], key=lambda u: u["id"]
    )
    assert (left["action"], left["user"], left["online"]) == (
        "left",
        contractor_info,
        [homeowner_info],
    )
    await homeowner.disconnect()


# --- slow clients, heartbeats, revoked keys ----------------------------------------------------


async def test_a_client_that_does_not_read_is_closed_with_4008_and_others_keep_receiving(settings):
    settings.REALTIME_SEND_QUEUE_SIZE = 5
    user, key = await make_user()
    # The slow client: the server reports its socket buffer as always full.
    slow_app = with_scope(application(), **{"realtime.buffered_bytes": lambda: 10**9})
    slow = await connect(key=key, app=slow_app)
    fast = await connect(key=key)
    channel = f"user.{user.pk}.payments"

    events = [await aemit(channels=[channel], audience=[user]) for _ in range(12)]

    received = await events_received(fast, 12)
    assert [m["id"] for m in received] == [event.position for event in events]
    output = await slow.receive_output(timeout=3)
    while output["type"] != "websocket.close":
        output = await slow.receive_output(timeout=3)
    assert output["code"] == CLOSE_SEND_QUEUE_OVERFLOW
    await fast.disconnect()


async def test_revoking_the_api_key_closes_its_connections_with_4001():
    user, key = await make_user()
    communicator = await connect(key=key)
    api_key = await database_sync_to_async(ApiKey.objects.get)(user=user)

    await database_sync_to_async(api_key_revoke)(api_key_id=api_key.pk, actor=user)

    output = await communicator.receive_output(timeout=3)
    assert output == {"type": "websocket.close", "code": CLOSE_AUTH_REVOKED}


async def test_heartbeats_are_sent_and_a_revocation_missed_live_is_caught(settings):
    settings.REALTIME_HEARTBEAT_SECONDS = 0.05
    settings.REALTIME_AUTH_RECHECK_SECONDS = 0.05
    user, key = await make_user()
    communicator = await connect(key=key)

    heartbeat = await receive(communicator)
    # Revoked behind the server's back: no group message, only the periodic re-check sees it.
    await database_sync_to_async(
        lambda: ApiKey.objects.filter(user=user).update(revoked_at="2026-01-01T00:00:00Z")
    )()
    output = await communicator.receive_output(timeout=3)
    while output["type"] != "websocket.close":
        output = await communicator.receive_output(timeout=3)

    assert heartbeat == {"type": "heartbeat"}
    assert output["code"] == CLOSE_AUTH_REVOKED


async def test_publishing_an_event_twice_delivers_it_once():
    from realtime.publishing import publish_events

    user, key = await make_user()
    communicator = await connect(key=key)
    event = await aemit(channels=[f"user.{user.pk}.payments"], audience=[user])

    await database_sync_to_async(publish_events)([event.position])
    marker = await aemit(channels=[f"user.{user.pk}.payments"], audience=[user])

    assert [m["id"] for m in await events_received(communicator, 2)] == [
        event.position,
        marker.position,
    ]
    await communicator.disconnect()


def emit_with_hook_between(user):
    """Like a release: two events, and between them an after-commit hook that commits (and
    publishes) an event of its own, as the payout start does."""
    channel = f"user.{user.pk}.payments"
    with transaction.atomic():
        first = emit(
            "milestone.status_updated", {}, aggregate=("m", 1), audience=[user], channels=[channel]
        )
        transaction.on_commit(lambda: emit_committed(channels=[channel], audience=[user]))
        second = emit(
            "milestone.released", {}, aggregate=("m", 1), audience=[user], channels=[channel]
        )
    first.refresh_from_db()
    second.refresh_from_db()
    return first, second


async def test_a_transactions_events_are_published_before_work_it_scheduled_after_commit():
    user, key = await make_user()
    communicator = await connect(key=key)

    first, second = await database_sync_to_async(emit_with_hook_between)(user)
    received = await events_received(communicator, 3)

    assert [m["id"] for m in received] == [first.position, second.position, second.position + 1]
    await communicator.disconnect()


def emit_with_rolled_back_savepoint(user):
    channel = f"user.{user.pk}.payments"
    with transaction.atomic():
        kept = emit("payment.started", {}, aggregate=("p", 1), audience=[user], channels=[channel])
        try:
            with transaction.atomic():
                emit("payment.failed", {}, aggregate=("p", 1), audience=[user], channels=[channel])
                raise ValueError("roll this part back")
        except ValueError:
            pass
    kept.refresh_from_db()
    return kept


async def test_an_event_rolled_back_with_its_savepoint_is_never_published():
    user, key = await make_user()
    communicator = await connect(key=key)

    kept = await database_sync_to_async(emit_with_rolled_back_savepoint)(user)
    marker = await aemit(channels=[f"user.{user.pk}.payments"], audience=[user])
    received = await events_received(communicator, 2)

    assert [m["id"] for m in received] == [kept.position, marker.position]
    assert [m["type"] for m in received] == ["payment.started", "payment.status_updated"]
    await communicator.disconnect()


async def test_live_events_are_delivered_without_a_database_thread_hop_per_message(monkeypatch):
    """Channels' dispatch would run close_old_connections() in the sync thread before every
    handler; EventsConsumer skips it (its database calls clean up after themselves), which is
    what keeps a live event's cost in Daphne to the send itself (docs/PERFORMANCE.md). The
    events still arrive, and a subscribe, which does use the database, still works."""
    calls = []

    async def counting():
        calls.append(1)

    monkeypatch.setattr("channels.consumer.aclose_old_connections", counting)
    project, _, homeowner_key, _ = await make_project()
    communicator = await connect(key=homeowner_key)
    await subscribe(communicator, [f"project.{project.pk}"])
    calls.clear()

    emitted = [
        await aemit(channels=[f"project.{project.pk}"], audience=[project.homeowner_id])
        for _ in range(3)
    ]
    received = await events_received(communicator, 3)

    assert [m["id"] for m in received] == [event.position for event in emitted]
    assert calls == []
    await communicator.disconnect()


async def test_after_a_resume_a_late_live_copy_of_an_older_event_is_not_sent():
    """A client that resumes from N has every event up to N. A live copy of one of those
    arriving after the replay (the embedded tailer catching up on its old cursor, or the sweep
    re-publishing) must not reach it again, out of order after newer ones; newer live events
    still do."""
    from realtime.publishing import publish_events

    user, key = await make_user()
    channel = f"user.{user.pk}.payments"
    old = await aemit(channels=[channel], audience=[user])
    seen = await aemit(channels=[channel], audience=[user])
    missed = await aemit(channels=[channel], audience=[user])
    communicator = await connect(key=key)
    await subscribe(communicator, [channel], last_event_id=seen.position)
    assert [m["id"] for m in await events_received(communicator, 1)] == [missed.position]

    await database_sync_to_async(publish_events)([old.position, seen.position])
    live = await aemit(channels=[channel], audience=[user])

    assert [m["id"] for m in await events_received(communicator, 1)] == [live.position]
    assert await nothing_more(communicator)
    await communicator.disconnect()


async def test_embedded_with_several_processes_a_plain_subscription_gets_nothing_from_before_it(
    settings,
):
    """Embedded mode, several processes: the tailer reads the store a period behind and
    would send events committed before a connection subscribed, late. Live delivery on a
    channel subscribed without last_event_id (the default one, and one asked for) starts
    after the store's latest position; later events still arrive."""
    from realtime.publishing import publish_events

    # Embedded: the in-memory layer (CI sets REDIS_URL), with the tailer on, its reads far off.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.REALTIME_TAIL_SECONDS = 60
    user, key = await make_user()
    payments, milestones = f"user.{user.pk}.payments", f"user.{user.pk}.milestones"
    before = await aemit(channels=[payments, milestones], audience=[user])
    communicator = await connect(key=key)
    await subscribe(communicator, [milestones])

    # The tailer's late copy of the event from before (a re-publish goes the same way).
    await database_sync_to_async(publish_events)([before.position])
    after = await aemit(channels=[payments, milestones], audience=[user])

    assert [m["id"] for m in await events_received(communicator, 1)] == [after.position]
    assert await nothing_more(communicator)
    await communicator.disconnect()
