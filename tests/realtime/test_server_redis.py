"""Two Daphne processes on one Redis (channels-redis pub/sub) and one database: each delivers
to its own clients, presence is shared, revocation and slow-client drops work across them,
and a dropped client resumes without losing anything."""

import asyncio
import json
import os
import uuid

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.realtime.conftest import requires_redis
from tests.realtime.servers import Daphne, migrated_sqlite, server_env, serverctl
from tests.realtime.test_server import (
    closed_code,
    log_out,
    next_event,
    next_json,
    session_socket,
    subscribed,
)

pytestmark = [pytest.mark.asyncio, requires_redis]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    directory = tmp_path_factory.mktemp("daphne-redis")
    env = server_env(
        migrated_sqlite(directory),
        redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        # Its own namespace on the shared Redis, so parallel runs do not hear each other.
        CHANNEL_LAYER_PREFIX=f"rt-test-{uuid.uuid4().hex[:8]}",
        REALTIME_SEND_QUEUE_SIZE="20",
        REALTIME_SEND_BUFFER_BYTES=str(256 * 1024),
    )
    first = Daphne(env, directory / "daphne-1.log").start()
    second = Daphne(env, directory / "daphne-2.log").start()
    yield first, second
    first.stop()
    second.stop()


def token_url(server, party) -> str:
    return server.ws_url + f"?token={party['key']}"


async def test_each_process_delivers_to_its_own_clients(servers):
    first, second = servers
    world = serverctl(first.env, "setup")
    channel = f"project.{world['project']}"
    homeowner_payments = f"user.{world['homeowner']['id']}.payments"
    async with (
        connect(token_url(first, world["homeowner"])) as homeowner_on_first,
        connect(token_url(second, world["contractor"])) as contractor_on_second,
        connect(token_url(second, world["homeowner"])) as homeowner_on_second,
    ):
        await subscribed(homeowner_on_first, [channel])
        await subscribed(contractor_on_second, [channel])
        ids = serverctl(
            first.env,
            "emit",
            count=3,
            channels=[channel, homeowner_payments],
            audience=[world["homeowner"]["id"], world["contractor"]["id"]],
        )["ids"]

        on_first = [await next_event(homeowner_on_first) for _ in range(3)]
        on_second = [await next_event(contractor_on_second) for _ in range(3)]
        payments_on_second = [await next_event(homeowner_on_second) for _ in range(3)]

    assert [m["id"] for m in on_first] == ids
    assert [m["id"] for m in on_second] == ids
    assert [(m["id"], m["channel"]) for m in payments_on_second] == [
        (event_id, homeowner_payments) for event_id in ids
    ]
    # Both subscribed channels carry them on the first process: still once each.
    assert [m["channel"] for m in on_first] == [channel] * 3


async def test_presence_is_shared_between_processes(servers):
    first, second = servers
    world = serverctl(first.env, "setup")
    channel = f"project.{world['project']}"
    async with connect(token_url(first, world["homeowner"])) as homeowner:
        await subscribed(homeowner, [channel])
        alone = await next_json(homeowner)
        async with connect(token_url(second, world["contractor"])) as contractor:
            await subscribed(contractor, [channel])
            joined = await next_json(homeowner)
        left = await next_json(homeowner)

    assert alone["online"] == [
        {"id": world["homeowner"]["id"], "username": alone["user"]["username"]}
    ]
    assert joined["action"] == "joined"
    assert {user["id"] for user in joined["online"]} == {
        world["homeowner"]["id"],
        world["contractor"]["id"],
    }
    assert left["action"] == "left"
    assert [user["id"] for user in left["online"]] == [world["homeowner"]["id"]]


async def test_revoking_a_key_closes_its_connections_on_every_process_with_4001(servers):
    first, second = servers
    world = serverctl(first.env, "setup")
    async with (
        connect(token_url(first, world["homeowner"])) as on_first,
        connect(token_url(second, world["homeowner"])) as on_second,
    ):
        await on_first.send(json.dumps({"type": "ping"}))
        await on_second.send(json.dumps({"type": "ping"}))
        await next_json(on_first)
        await next_json(on_second)
        serverctl(first.env, "revoke", user=world["homeowner"]["id"])
        codes = []
        for websocket in (on_first, on_second):
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(websocket.recv(), 10)
            codes.append(closed.value.rcvd.code)

    assert codes == [4001, 4001]


async def test_logging_out_closes_that_sessions_sockets_on_every_process_and_no_other(servers):
    """Given one session's sockets on both processes and another session's, of the same user;
    when the first session logs out through one process; then both its sockets close with 4001
    within a second, and the other session's socket still receives the user's events."""
    first, second = servers
    world = serverctl(first.env, "setup")
    user = world["homeowner"]["id"]
    leaving = serverctl(first.env, "sign_in", user=user)["session"]
    staying = serverctl(first.env, "sign_in", user=user)["session"]
    async with (
        session_socket(first, leaving) as leaving_on_first,
        session_socket(second, leaving) as leaving_on_second,
        session_socket(second, staying) as staying_on_second,
    ):
        for websocket in (leaving_on_first, leaving_on_second, staying_on_second):
            await subscribed(websocket, [f"user.{user}.payments"])

        status = await asyncio.to_thread(log_out, first, leaving)
        codes = [await closed_code(leaving_on_first), await closed_code(leaving_on_second)]
        ids = serverctl(
            first.env, "emit", count=1, channels=[f"user.{user}.payments"], audience=[user]
        )["ids"]
        after = await next_event(staying_on_second)

    assert status == 302
    assert codes == [4001, 4001]
    assert after["id"] == ids[0]


async def test_deactivating_a_user_closes_all_their_sockets_on_every_process(servers):
    """Given a user's session socket on one process and token socket on the other, and
    another user's; when the user is deactivated; then both close with 4001 within a second
    and the other user's socket stays open and receives."""
    first, second = servers
    world = serverctl(first.env, "setup")
    user, contractor = world["homeowner"]["id"], world["contractor"]["id"]
    session = serverctl(first.env, "sign_in", user=user)["session"]
    async with (
        session_socket(first, session) as by_session,
        connect(token_url(second, world["homeowner"])) as by_token,
        connect(token_url(second, world["contractor"])) as other,
    ):
        for websocket, owner in ((by_session, user), (by_token, user), (other, contractor)):
            await subscribed(websocket, [f"user.{owner}.payments"])

        await asyncio.to_thread(serverctl, first.env, "deactivate", user=user)
        codes = [await closed_code(by_session), await closed_code(by_token)]
        ids = serverctl(
            first.env,
            "emit",
            count=1,
            channels=[f"user.{contractor}.payments"],
            audience=[contractor],
        )["ids"]
        after = await next_event(other)

    assert codes == [4001, 4001]
    assert after["id"] == ids[0]


async def test_a_client_that_falls_behind_live_events_is_dropped_and_resumes_losing_nothing(
    servers,
):
    first, second = servers
    world = serverctl(first.env, "setup")
    homeowner = world["homeowner"]
    channel = f"user.{homeowner['id']}.payments"
    count = 300
    async with (
        connect(token_url(first, homeowner), max_queue=1, max_size=None) as slow,
        connect(token_url(first, homeowner), max_size=None) as fast,
    ):
        await subscribed(slow, [channel])
        await subscribed(fast, [channel])
        emitting = asyncio.create_task(
            asyncio.to_thread(
                serverctl,
                first.env,
                "emit",
                count=count,
                channels=[channel],
                audience=[homeowner["id"]],
                size=64 * 1024,
            )
        )
        fast_ids = [(await next_event(fast, timeout=60))["id"] for _ in range(count)]
        ids = (await emitting)["ids"]
        slow_ids = []
        with pytest.raises(ConnectionClosed):
            while True:
                message = json.loads(await asyncio.wait_for(slow.recv(), 20))
                if "id" in message:
                    slow_ids.append(message["id"])

    last_seen = slow_ids[-1] if slow_ids else 0
    async with connect(token_url(second, homeowner), max_size=None) as resumed:
        await subscribed(resumed, [channel], last_event_id=last_seen)
        rest = [(await next_event(resumed))["id"] for _ in range(len(ids) - len(slow_ids))]

    assert fast_ids == ids
    assert len(slow_ids) < count
    assert slow_ids == ids[: len(slow_ids)]
    assert slow_ids + rest == ids
