"""Publishing to channels-redis pub/sub: a batch of events goes out in one pipeline, and a
connection subscribed to several of the groups receives them in the order published, the
order one group_send after another would give."""

import asyncio
import os
import uuid

from channels_redis.pubsub import RedisPubSubChannelLayer
from django.utils import timezone

from realtime import publishing
from realtime.models import Event
from tests.realtime.conftest import requires_redis

pytestmark = requires_redis


def events(count: int) -> list[Event]:
    now = timezone.now()
    return [
        Event(
            position=position,
            type="payment.status_updated",
            aggregate_type="payment",
            aggregate_id="1",
            data={"n": position},
            # Every event on a channel of its own and on the shared one, alternating.
            channels=[f"project.{position % 3}", "user.1.payments"],
            audience=[1],
            created_at=now,
        )
        for position in range(1, count + 1)
    ]


def test_a_batch_is_published_in_one_pipeline_and_received_in_order(monkeypatch):
    layer = RedisPubSubChannelLayer(
        hosts=[os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")],
        prefix=f"pub-test-{uuid.uuid4().hex[:8]}",
    )
    sent = events(60)

    async def one_by_one_is_not_used(*args, **kwargs):
        raise AssertionError("group_send was called: the batch was not pipelined")

    async def scenario():
        channel = await layer.new_channel()
        for group in ("project.0", "project.1", "project.2", "user.1.payments"):
            await layer.group_add(group, channel)
        monkeypatch.setattr(
            type(layer._get_layer()), "group_send", one_by_one_is_not_used, raising=True
        )
        await publishing._send_all(layer, sent)
        received = []
        for _ in range(len(sent) * 2):
            message = await asyncio.wait_for(layer.receive(channel), timeout=5)
            received.append((message["event"]["id"], message["channel"]))
        await layer.flush()
        return received

    received = asyncio.run(scenario())
    expected = [(event.position, name) for event in sent for name in event.channels]
    assert received == expected


def test_any_other_layer_gets_one_group_send_after_another():
    from channels.layers import InMemoryChannelLayer

    layer = InMemoryChannelLayer()
    sent = events(5)

    async def scenario():
        channel = await layer.new_channel()
        await layer.group_add("user.1.payments", channel)
        await publishing._send_all(layer, sent)
        return [(await layer.receive(channel))["event"]["id"] for _ in sent]

    assert asyncio.run(scenario()) == [1, 2, 3, 4, 5]
