"""Helpers for realtime tests: WebSocket connections through the real ASGI stack (auth
middleware, router, consumer) with Channels' communicator, and committed events."""

import json
import os

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.db import transaction

import realtime.presence
from realtime.events import emit

ORIGIN = (b"origin", b"http://localhost")

# Like tests.conftest.requires_postgres: CI sets REDIS_URL, so these run there.
requires_redis = pytest.mark.skipif(
    not os.environ.get("REDIS_URL") and not os.environ.get("CI"),
    reason="needs Redis (REDIS_URL); CI runs it",
)


@pytest.fixture(autouse=True)
def _no_event_tailing(settings):
    """The in-process tests publish in-process; the cross-process tailer has its own test."""
    settings.REALTIME_TAIL_SECONDS = 0


@pytest.fixture(autouse=True)
def _fresh_layer_and_presence():
    """Each test gets its own in-memory layer and presence store (they hold asyncio queues
    of the test's event loop)."""
    channel_layers.backends.clear()
    realtime.presence._store = None
    yield
    channel_layers.backends.clear()
    realtime.presence._store = None


def application():
    from config.asgi import application as app

    return app


def with_scope(app, **extra):
    """Wrap the application so its scope carries extra keys (e.g. a buffered-bytes probe)."""

    async def wrapped(scope, receive, send):
        return await app(dict(scope, **extra), receive, send)

    return wrapped


async def connect(*, key=None, headers=None, path="/ws/", app=None, expect=True):
    """Open /ws/ (with ?token=key when given). Returns the communicator, connected or not.
    Like a browser, it sends `Host: localhost` unless `headers` name another host (ORIGIN is
    then that host's own origin)."""
    url = f"{path}?token={key}" if key else path
    headers = list(headers or [])
    if not any(name == b"host" for name, _ in headers):
        headers.append((b"host", b"localhost"))
    communicator = WebsocketCommunicator(app or application(), url, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected is expect
    return communicator


async def receive(communicator, timeout=3) -> dict:
    return json.loads(await communicator.receive_from(timeout=timeout))


async def receive_until(communicator, predicate, timeout=3) -> dict:
    """Skip messages (heartbeats, presence...) until one matches."""
    while True:
        message = await receive(communicator, timeout=timeout)
        if predicate(message):
            return message


async def events_received(communicator, count, timeout=3) -> list[dict]:
    """The next `count` event messages (anything with an id), skipping the rest."""
    result = []
    while len(result) < count:
        message = await receive(communicator, timeout=timeout)
        if "id" in message:
            result.append(message)
    return result


async def nothing_more(communicator, timeout=0.3) -> bool:
    """True when nothing arrives within the timeout (heartbeats are 25 s apart by default)."""
    return await communicator.receive_nothing(timeout=timeout)


async def subscribe(communicator, channels, last_event_id=None) -> dict:
    message = {"type": "subscribe", "channels": channels}
    if last_event_id is not None:
        message["last_event_id"] = last_event_id
    await communicator.send_json_to(message)
    return await receive_until(communicator, lambda m: m["type"] == "subscribed")


def emit_committed(type="payment.status_updated", data=None, *, channels, audience, aggregate=None):
    """Emit in its own transaction; sequencing and publishing run on commit, as in
    production. Returns the event as stored after that, with its position (public id)."""
    with transaction.atomic():
        event = emit(
            type,
            data or {"n": 1},
            aggregate=aggregate or ("payment", 1),
            audience=audience,
            channels=channels,
        )
    event.refresh_from_db()
    return event


aemit = database_sync_to_async(emit_committed)
