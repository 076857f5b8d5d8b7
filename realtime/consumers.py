"""`/ws/`: one consumer per connection. It authenticates, authorizes each channel through a
selector, replays from the event store, then forwards live events. It writes nothing.

Close codes: 4001 what authenticated the connection ended (the session logged out, the
password changed, the user was deactivated, the API key was revoked: accounts.connections);
4008 the client fell too far behind (its send
queue overflowed): reconnect and subscribe with `last_event_id` to get what it missed."""

import asyncio
import json
import logging
from collections import deque

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from realtime import selectors
from realtime.auth import auth_groups, credential_is_current, origin_is_allowed
from realtime.presence import presence_store
from realtime.tailer import latest_position, tailer

logger = logging.getLogger(__name__)

CLOSE_AUTH_REVOKED = 4001
CLOSE_SEND_QUEUE_OVERFLOW = 4008
REPLAY_BATCH = 500
MAX_CHANNELS_PER_CONNECTION = 200


class _RecentIds:
    """The event ids this connection has sent lately: drops the second copy of an event that
    several subscribed channels carry, or that was published twice."""

    def __init__(self, capacity: int) -> None:
        self._ids: set[int] = set()
        self._order: deque[int] = deque()
        self._capacity = capacity

    def __contains__(self, event_id: int) -> bool:
        return event_id in self._ids

    def add(self, event_id: int) -> None:
        self._ids.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self._capacity:
            self._ids.discard(self._order.popleft())


class _Overflow(Exception):
    pass


def _event_text(event: dict, channel: str) -> str:
    return json.dumps(
        {
            "type": event["type"],
            "id": event["id"],
            "channel": channel,
            "data": event["data"],
            "timestamp": event["timestamp"],
        },
        separators=(",", ":"),
    )


class EventsConsumer(AsyncWebsocketConsumer):
    async def dispatch(self, message):
        """Channels' own dispatch first runs close_old_connections() in the sync thread before
        every handler, a thread hop per live event, a large share of Daphne's CPU at the bench's
        rates (docs/PERFORMANCE.md). This consumer touches the database
        only through database_sync_to_async, which closes old connections itself around each
        call, and the event loop's thread never holds one, so the hop guards nothing here."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- connection lifecycle ------------------------------------------------------------

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not origin_is_allowed(self.scope):
            await self.close()  # before accept: the handshake is refused (HTTP 403)
            return
        self.user_id = user.pk
        self.username = user.username
        self.api_key_id = self.scope.get("api_key_id")
        self.subscriptions: set[str] = set()
        # Per channel, the id up to which nothing is sent live: the last_event_id a subscribe
        # resumed from (the client has every event up to it, so a late live copy of one, from
        # the embedded tailer catching up or a re-publish by the sweep, is not sent again after
        # the replay), or, embedded with several processes, the store's latest position when a
        # plain subscription began (_live_from_now).
        self.resumed_up_to: dict[str, int] = {}
        self.presence_channels: set[str] = set()
        self.sent = _RecentIds(settings.REALTIME_DEDUPE_WINDOW)
        # Bounded by hand: live events and replies overflow at `queue_limit` (the connection
        # is dropped), while a replay waits below half of it so replies always fit.
        self.outbox: asyncio.Queue[str] = asyncio.Queue()
        self.queue_limit = settings.REALTIME_SEND_QUEUE_SIZE
        self.has_room = asyncio.Event()
        self.has_room.set()
        self.held: list[tuple[int, str, dict]] = []
        self.replays_running = 0
        self.closing = False
        self.tasks: set[asyncio.Task] = set()
        self.buffered_bytes = self.scope.get("realtime.buffered_bytes")
        # The default subscription starts before the handshake completes, so that nothing
        # the client does once connected can fall between the two (the outbox holds
        # anything that arrives meanwhile).
        self.auth_groups = auth_groups(self.scope)
        for group in self.auth_groups:
            await self.channel_layer.group_add(group, self.channel_name)
        await self._live_from_now(await self._add([f"user.{self.user_id}.payments"]))
        await self.accept()
        tailer.attach(self.channel_layer)
        self._start(self._send_loop())
        self._start(self._heartbeat_loop())

    async def disconnect(self, code):
        if not hasattr(self, "outbox"):
            return
        self.closing = True
        tailer.detach(self.channel_layer)
        for task in list(self.tasks):
            task.cancel()
        for group in self.auth_groups:
            await self.channel_layer.group_discard(group, self.channel_name)
        await self._remove(list(self.subscriptions))

    async def receive(self, text_data=None, bytes_data=None):
        try:
            message = json.loads(text_data or "")
            kind = message.get("type") if isinstance(message, dict) else None
        except ValueError:
            kind, message = None, {}
        try:
            if kind == "ping":
                self._queue({"type": "pong"})
            elif kind == "subscribe":
                await self._subscribe(message)
            elif kind == "unsubscribe":
                await self._unsubscribe(message)
            else:
                self._queue({"type": "error", "code": "invalid_message"})
        except _Overflow:
            await self._overflow()

    # --- client requests -----------------------------------------------------------------

    async def _subscribe(self, message: dict) -> None:
        channels = message.get("channels")
        last_event_id = message.get("last_event_id")
        if (
            not isinstance(channels, list)
            or len(channels) > MAX_CHANNELS_PER_CONNECTION
            or (last_event_id is not None and (type(last_event_id) is not int or last_event_id < 0))
        ):
            self._queue({"type": "error", "code": "invalid_message"})
            return
        user = self.scope["user"]
        allowed, refused = await database_sync_to_async(selectors.channels_authorize)(
            user=user, channels=channels
        )
        if len(self.subscriptions | set(allowed)) > MAX_CHANNELS_PER_CONNECTION:
            self._queue({"type": "error", "code": "too_many_channels"})
            return
        for channel in refused:
            self._queue({"type": "error", "code": "forbidden", "channel": channel})
        # Join the groups before reading the store: an event sequenced after the read is
        # then certain to arrive live (positions are published in order), so there is no gap.
        added = await self._add(allowed)
        if last_event_id is None:
            await self._live_from_now(added)
        self._queue({"type": "subscribed", "channels": allowed})
        if last_event_id is not None and allowed:
            for channel in allowed:
                self.resumed_up_to[channel] = max(self.resumed_up_to.get(channel, 0), last_event_id)
            self.replays_running += 1
            self._start(self._replay(allowed, last_event_id))

    async def _unsubscribe(self, message: dict) -> None:
        channels = message.get("channels")
        if not isinstance(channels, list):
            self._queue({"type": "error", "code": "invalid_message"})
            return
        names = [channel for channel in channels if channel in self.subscriptions]
        await self._remove(names)
        self._queue({"type": "unsubscribed", "channels": names})

    # --- groups and presence ---------------------------------------------------------------

    async def _live_from_now(self, channels: list[str]) -> None:
        """Embedded mode with several server processes: this process's tailer reads the store
        a period behind, so it would send events that committed before these subscriptions
        began, late and after newer ones from this process. Live delivery on a channel
        subscribed without last_event_id starts after the store's latest position, read
        after joining the group and before the client hears it is subscribed. With Redis
        (pub/sub spans the processes) nothing arrives that late, and nothing is read."""
        if not channels or not tailer.enabled_for(self.channel_layer):
            return
        latest = await database_sync_to_async(latest_position)()
        for channel in channels:
            self.resumed_up_to[channel] = max(self.resumed_up_to.get(channel, 0), latest)

    async def _add(self, channels: list[str]) -> list[str]:
        """Join these channels' groups; returns the ones that were not joined already."""
        added = []
        for channel in channels:
            if channel in self.subscriptions:
                continue
            await self.channel_layer.group_add(channel, self.channel_name)
            self.subscriptions.add(channel)
            added.append(channel)
            if selectors.channel_has_presence(channel):
                self.presence_channels.add(channel)
                online = await presence_store().join(
                    channel, self.channel_name, self.user_id, self.username
                )
                await self._announce(channel, "joined", online)
        return added

    async def _remove(self, channels: list[str]) -> None:
        for channel in channels:
            if channel not in self.subscriptions:
                continue
            self.subscriptions.discard(channel)
            await self.channel_layer.group_discard(channel, self.channel_name)
            if channel in self.presence_channels:
                self.presence_channels.discard(channel)
                online = await presence_store().leave(
                    channel, self.channel_name, self.user_id, self.username
                )
                await self._announce(channel, "left", online)

    async def _announce(self, channel: str, action: str, online: list[dict]) -> None:
        await self.channel_layer.group_send(
            channel,
            {
                "type": "presence.message",
                "channel": channel,
                "action": action,
                "user": {"id": self.user_id, "username": self.username},
                "online": online,
            },
        )

    # --- replay ------------------------------------------------------------------------------

    async def _replay(self, channels: list[str], after: int) -> None:
        """Send what `channels` carried after `after`, in id order, then the live events held
        meanwhile (those not already sent). Runs beside the receive loop so live events keep
        being taken off the channel layer while the store is read. It waits for room in the
        send queue (it is the producer here), so only a client that stays behind while live
        events pile up in `held` is dropped."""
        try:
            if not await database_sync_to_async(selectors.resume_is_possible)(after=after):
                self._queue(
                    {"type": "resync_required", "channels": channels, "last_event_id": after}
                )
                return
            wanted = set(channels)
            cursor = after
            while True:
                events = await database_sync_to_async(selectors.event_list_for_channels)(
                    channels=channels, after=cursor, limit=REPLAY_BATCH
                )
                for event in events:
                    channel = next(name for name in event.channels if name in wanted)
                    await self._send_event_waiting(event.as_message(), channel)
                if len(events) < REPLAY_BATCH:
                    break
                cursor = events[-1].position
            while self.replays_running == 1 and self.held:
                held, self.held = self.held, []
                for _, channel, event in sorted(held, key=lambda item: item[0]):
                    if channel in self.subscriptions:
                        await self._send_event_waiting(event, channel)
        except _Overflow:
            await self._overflow()
        finally:
            self.replays_running -= 1

    # --- from the channel layer --------------------------------------------------------------

    async def event_message(self, message: dict) -> None:
        channel, event = message["channel"], message["event"]
        if self.closing or channel not in self.subscriptions:
            return
        if event["id"] <= self.resumed_up_to.get(channel, 0):
            return
        try:
            if self.replays_running:
                if len(self.held) >= self.queue_limit:
                    raise _Overflow
                self.held.append((event["id"], channel, event))
                return
            self._send_event(event, channel)
        except _Overflow:
            await self._overflow()

    async def presence_message(self, message: dict) -> None:
        if self.closing or message["channel"] not in self.subscriptions:
            return
        try:
            self._queue(
                {key: message[key] for key in ("channel", "action", "user", "online")}
                | {"type": "presence"}
            )
        except _Overflow:
            await self._overflow()

    async def auth_ended(self, message: dict) -> None:
        # A password change ends the user's sessions; their API keys keep working.
        if message.get("sessions_only") and self.api_key_id:
            return
        await self._close(CLOSE_AUTH_REVOKED)

    # --- sending -----------------------------------------------------------------------------

    def _send_event(self, event: dict, channel: str) -> None:
        if event["id"] in self.sent:
            return
        self.sent.add(event["id"])
        self._queue_text(_event_text(event, channel))

    async def _send_event_waiting(self, event: dict, channel: str) -> None:
        if event["id"] in self.sent or self.closing:
            return
        while self.outbox.qsize() >= self.queue_limit // 2:
            self.has_room.clear()
            await self.has_room.wait()
        self.sent.add(event["id"])
        self.outbox.put_nowait(_event_text(event, channel))

    def _queue(self, message: dict) -> None:
        self._queue_text(json.dumps(message, separators=(",", ":")))

    def _queue_text(self, text: str) -> None:
        if self.closing:
            return
        if self.outbox.qsize() >= self.queue_limit:
            raise _Overflow
        self.outbox.put_nowait(text)

    async def _send_loop(self) -> None:
        limit = settings.REALTIME_SEND_BUFFER_BYTES
        while True:
            text = await self.outbox.get()
            if self.outbox.qsize() < self.queue_limit // 2:
                self.has_room.set()
            try:
                await self.send(text_data=text)
            except Exception:  # the server refuses: the peer is gone, its disconnect follows
                self.closing = True
                return
            # A client that does not read: wait here and let the bounded queue fill.
            pause = 0.002
            while self.buffered_bytes is not None and self.buffered_bytes() > limit:
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.05)

    async def _overflow(self) -> None:
        logger.warning(
            "websocket send queue overflow; closing",
            extra={"user_id": self.user_id, "queued": self.outbox.qsize()},
        )
        await self._close(CLOSE_SEND_QUEUE_OVERFLOW)

    async def _close(self, code: int) -> None:
        if self.closing:
            return
        self.closing = True
        for task in list(self.tasks):
            if task is not asyncio.current_task():
                task.cancel()
        await self.close(code=code)

    async def _heartbeat_loop(self) -> None:
        interval = settings.REALTIME_HEARTBEAT_SECONDS
        recheck_every = max(1, int(settings.REALTIME_AUTH_RECHECK_SECONDS // interval))
        beats = 0
        while True:
            await asyncio.sleep(interval)
            beats += 1
            try:
                self._queue({"type": "heartbeat"})
            except _Overflow:
                await self._overflow()
                return
            if self.presence_channels:
                await presence_store().refresh(
                    self.presence_channels, self.channel_name, self.user_id, self.username
                )
            # The close message (accounts.connections) is best effort, sent after commit;
            # this catches a lost one.
            if beats % recheck_every == 0 and not await credential_is_current(self.scope):
                await self._close(CLOSE_AUTH_REVOKED)
                return

    def _start(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("websocket task failed", exc_info=task.exception())
