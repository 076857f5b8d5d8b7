"""/ws/ through a real Daphne process (embedded mode: temporary SQLite, in-memory layer):
refused handshakes, both parties live on an action taken over HTTP, resume from the store,
and a client that stops reading, which must not hold up anyone else."""

import asyncio
import http.client
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.realtime.servers import Daphne, migrated_sqlite, server_env, serverctl

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("daphne")
    env = server_env(
        migrated_sqlite(directory),
        REALTIME_SEND_QUEUE_SIZE="20",
        REALTIME_SEND_BUFFER_BYTES=str(1024 * 1024),
    )
    daphne = Daphne(env, directory / "daphne.log").start()
    yield daphne
    daphne.stop()


async def next_json(websocket, timeout=10) -> dict:
    return json.loads(await asyncio.wait_for(websocket.recv(), timeout))


async def next_event(websocket, timeout=10) -> dict:
    while True:
        message = await next_json(websocket, timeout)
        if "id" in message:
            return message


async def subscribed(websocket, channels, last_event_id=None) -> dict:
    request = {"type": "subscribe", "channels": channels}
    if last_event_id is not None:
        request["last_event_id"] = last_event_id
    await websocket.send(json.dumps(request))
    while True:
        message = await next_json(websocket)
        if message["type"] == "subscribed":
            return message


def session_socket(server, session_key):
    return connect(
        server.ws_url,
        origin=f"http://127.0.0.1:{server.port}",
        additional_headers={"Cookie": f"sessionid={session_key}"},
    )


async def closed_code(websocket, timeout=1) -> int:
    """The close code the server sends within `timeout` seconds, skipping messages before."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(websocket.recv(), timeout)
    return closed.value.rcvd.code


def log_out(server, session_key) -> int:
    """POST /accounts/logout/ as the browser holding this session does (with its CSRF token)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    token = "a" * 32
    connection.request(
        "POST",
        "/accounts/logout/",
        headers={
            "Cookie": f"sessionid={session_key}; csrftoken={token}",
            "X-CSRFToken": token,
            "Origin": f"http://127.0.0.1:{server.port}",
        },
    )
    return connection.getresponse().status


async def refused_status(url, **kwargs) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, open_timeout=10, **kwargs):
            pass
    return refused.value.response.status_code


async def test_handshakes_without_valid_credentials_or_with_a_foreign_origin_are_refused(server):
    world = serverctl(server.env, "setup")
    key = world["homeowner"]["key"]

    assert await refused_status(server.ws_url) == 403
    assert await refused_status(server.ws_url + "?token=esk_wrong") == 403
    assert (
        await refused_status(
            server.ws_url + f"?token={key}", additional_headers={"Origin": "https://evil.example"}
        )
        == 403
    )
    async with connect(server.ws_url + f"?token={key}", open_timeout=10) as websocket:
        await websocket.send(json.dumps({"type": "ping"}))
        assert await next_json(websocket) == {"type": "pong"}


async def test_both_parties_see_an_action_taken_over_http_and_a_stranger_sees_nothing(server):
    world = serverctl(server.env, "setup")
    channel = f"project.{world['project']}"
    async with (
        connect(server.ws_url + f"?token={world['homeowner']['key']}") as homeowner,
        connect(server.ws_url + f"?token={world['contractor']['key']}") as contractor,
        connect(server.ws_url + f"?token={world['stranger']['key']}") as stranger,
    ):
        await subscribed(homeowner, [channel])
        await subscribed(contractor, [channel])
        await stranger.send(json.dumps({"type": "subscribe", "channels": [channel]}))
        refusal = await next_json(stranger)

        status, _ = await asyncio.to_thread(
            server.http,
            "POST",
            f"/api/v1/projects/{world['project']}/sign",
            key=world["homeowner"]["key"],
        )
        seen_by_homeowner = await next_event(homeowner)
        seen_by_contractor = await next_event(contractor)
        await stranger.send(json.dumps({"type": "ping"}))
        after_refusal = [await next_json(stranger), await next_json(stranger)]

    assert status == 200
    assert refusal == {"type": "error", "code": "forbidden", "channel": channel}
    assert seen_by_homeowner["type"] == "project.signed"
    assert seen_by_homeowner["channel"] == channel
    assert seen_by_homeowner["data"]["project_id"] == world["project"]
    assert seen_by_contractor["id"] == seen_by_homeowner["id"]
    assert after_refusal == [{"type": "subscribed", "channels": []}, {"type": "pong"}]


async def test_a_client_back_from_offline_gets_exactly_what_it_missed_then_live(server):
    world = serverctl(server.env, "setup")
    homeowner = world["homeowner"]
    channel = f"user.{homeowner['id']}.payments"
    async with connect(server.ws_url + f"?token={homeowner['key']}") as websocket:
        await subscribed(websocket, [channel])
    # While it is offline: five events on its channel, one on someone else's.
    ids = serverctl(server.env, "emit", count=5, channels=[channel], audience=[homeowner["id"]])[
        "ids"
    ]
    serverctl(
        server.env,
        "emit",
        count=1,
        channels=[f"user.{world['stranger']['id']}.payments"],
        audience=[world["stranger"]["id"]],
    )

    async with connect(server.ws_url + f"?token={homeowner['key']}") as websocket:
        await subscribed(websocket, [channel, f"project.{world['project']}"], last_event_id=ids[1])
        replayed = [await next_event(websocket) for _ in range(3)]
        await asyncio.to_thread(
            server.http, "POST", f"/api/v1/projects/{world['project']}/sign", key=homeowner["key"]
        )
        live = await next_event(websocket)

    assert [message["id"] for message in replayed] == ids[2:]
    assert [message["data"]["n"] for message in replayed] == [2, 3, 4]
    assert live["type"] == "project.signed"
    assert live["id"] > ids[-1]


async def test_a_client_that_stops_reading_does_not_hold_up_another(server):
    """A replay to a client that does not read pauses (the server holds at most half a send
    queue and REALTIME_SEND_BUFFER_BYTES for it) while another client on the same server
    gets everything; when the slow one reads again it gets every event, in order."""
    world = serverctl(server.env, "setup")
    homeowner = world["homeowner"]
    channel = f"user.{homeowner['id']}.payments"
    count = 300
    serverctl(
        server.env,
        "emit",
        count=count,
        channels=[channel],
        audience=[homeowner["id"]],
        size=64 * 1024,
    )
    url = server.ws_url + f"?token={homeowner['key']}"
    # The slow client stops reading after subscribing: 19 MB are more than the kernel's
    # socket buffers, the server's 1 MB limit and half a send queue together.
    async with (
        connect(url, max_queue=1, max_size=None) as slow,
        connect(url, max_size=None) as fast,
    ):
        await subscribed(slow, [channel], last_event_id=0)
        await subscribed(fast, [channel], last_event_id=0)
        fast_received = [await next_event(fast) for _ in range(count)]
        slow_received = [await next_event(slow) for _ in range(count)]

    assert [message["data"]["n"] for message in fast_received] == list(range(count))
    assert [message["data"]["n"] for message in slow_received] == list(range(count))


async def test_two_embedded_mode_processes_reach_each_others_clients(tmp_path):
    """`make serve` without Redis: two Daphne processes, in-memory layers, one SQLite file.
    An action handled by one process reaches a client connected to the other."""
    env = server_env(migrated_sqlite(tmp_path))
    first = Daphne(env, tmp_path / "first.log").start()
    second = Daphne(env, tmp_path / "second.log").start()
    try:
        world = serverctl(env, "setup")
        channel = f"project.{world['project']}"
        async with (
            connect(first.ws_url + f"?token={world['contractor']['key']}") as on_first,
            connect(second.ws_url + f"?token={world['homeowner']['key']}") as on_second,
        ):
            await subscribed(on_first, [channel])
            await subscribed(on_second, [channel])
            status, _ = await asyncio.to_thread(
                second.http,
                "POST",
                f"/api/v1/projects/{world['project']}/sign",
                key=world["homeowner"]["key"],
            )
            seen_on_first = await next_event(on_first)
            seen_on_second = await next_event(on_second)
            # Give the second process's tailer time to read the same event (two periods).
            await asyncio.sleep(0.6)
            await on_second.send(json.dumps({"type": "ping"}))
            after = await next_json(on_second)
    finally:
        first.stop()
        second.stop()

    assert status == 200
    assert seen_on_first["type"] == seen_on_second["type"] == "project.signed"
    assert seen_on_first["id"] == seen_on_second["id"]
    assert after == {"type": "pong"}  # the tailer's copy of it was dropped


async def test_a_logout_on_one_embedded_mode_process_closes_the_sessions_socket_on_another(
    tmp_path,
):
    """`make serve` without Redis: a browser's socket is on the second process, the logout
    is handled by the first; the second closes it with 4001 within about a second (its tailer
    reads the close from the database), and another session's socket there stays open."""
    env = server_env(migrated_sqlite(tmp_path))
    first = Daphne(env, tmp_path / "first.log").start()
    second = Daphne(env, tmp_path / "second.log").start()
    try:
        world = serverctl(env, "setup")
        user = world["homeowner"]["id"]
        leaving = serverctl(env, "sign_in", user=user)["session"]
        staying = serverctl(env, "sign_in", user=user)["session"]
        async with (
            session_socket(second, leaving) as leaving_socket,
            session_socket(second, staying) as staying_socket,
        ):
            await subscribed(leaving_socket, [f"user.{user}.payments"])
            await subscribed(staying_socket, [f"user.{user}.payments"])

            status = await asyncio.to_thread(log_out, first, leaving)
            code = await closed_code(leaving_socket, timeout=2)
            await staying_socket.send(json.dumps({"type": "ping"}))
            still_open = await next_json(staying_socket)
    finally:
        first.stop()
        second.stop()

    assert status == 302
    assert code == 4001
    assert still_open == {"type": "pong"}
