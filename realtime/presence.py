"""Who is online on a presence channel (project.<id>, dispute.<id>).

Each connection is a member with an expiry that its heartbeat pushes forward, so a crashed
server's members age out. In Redis mode the members live in one sorted set per channel
(score = expiry), shared by every Daphne process; in embedded mode a dict in this process."""

import asyncio
import json
import time
import weakref

from django.conf import settings


def _ttl() -> float:
    return settings.REALTIME_HEARTBEAT_SECONDS * 3


def _online(members) -> list[dict]:
    users = {}
    for user_id, username in members:
        users[user_id] = {"id": user_id, "username": username}
    return [users[user_id] for user_id in sorted(users)]


class MemoryPresence:
    def __init__(self) -> None:
        self._channels: dict[str, dict[str, tuple[int, str, float]]] = {}

    def _live(self, channel: str) -> list[tuple[int, str]]:
        now = time.monotonic()
        members = self._channels.get(channel, {})
        for key in [key for key, (_, _, expires) in members.items() if expires <= now]:
            del members[key]
        return [(user_id, username) for user_id, username, _ in members.values()]

    async def join(self, channel: str, connection: str, user_id: int, username: str):
        self._channels.setdefault(channel, {})[connection] = (
            user_id,
            username,
            time.monotonic() + _ttl(),
        )
        return _online(self._live(channel))

    async def leave(self, channel: str, connection: str, user_id: int, username: str):
        self._channels.get(channel, {}).pop(connection, None)
        online = _online(self._live(channel))
        if not self._channels.get(channel):
            self._channels.pop(channel, None)
        return online

    async def refresh(self, channels, connection: str, user_id: int, username: str) -> None:
        for channel in channels:
            member = self._channels.get(channel, {}).get(connection)
            if member:
                self._channels[channel][connection] = (*member[:2], time.monotonic() + _ttl())


class RedisPresence:
    def __init__(self, url: str, prefix: str) -> None:
        self._url = url
        self._prefix = prefix
        # redis.asyncio clients belong to one event loop (Daphne has one; tests have many).
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _client(self):
        import redis.asyncio

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = redis.asyncio.Redis.from_url(self._url, socket_timeout=5)
            self._clients[loop] = client
        return client

    def _key(self, channel: str) -> str:
        return f"{self._prefix}:presence:{channel}"

    @staticmethod
    def _member(connection: str, user_id: int, username: str) -> str:
        return json.dumps([user_id, username, connection])

    async def _online(self, channel: str) -> list[dict]:
        client = self._client()
        now = time.time()
        await client.zremrangebyscore(self._key(channel), "-inf", now)
        members = await client.zrangebyscore(self._key(channel), now, "+inf")
        return _online((json.loads(member)[0], json.loads(member)[1]) for member in members)

    async def join(self, channel: str, connection: str, user_id: int, username: str):
        client = self._client()
        key = self._key(channel)
        await client.zadd(key, {self._member(connection, user_id, username): time.time() + _ttl()})
        await client.expire(key, int(_ttl() * 2))
        return await self._online(channel)

    async def leave(self, channel: str, connection: str, user_id: int, username: str):
        await self._client().zrem(self._key(channel), self._member(connection, user_id, username))
        return await self._online(channel)

    async def refresh(self, channels, connection: str, user_id: int, username: str) -> None:
        client = self._client()
        member = self._member(connection, user_id, username)
        expires = time.time() + _ttl()
        async with client.pipeline(transaction=False) as pipe:
            for channel in channels:
                pipe.zadd(self._key(channel), {member: expires}, xx=True)
                pipe.expire(self._key(channel), int(_ttl() * 2))
            await pipe.execute()


_store = None


def presence_store():
    global _store
    if _store is None:
        if settings.REDIS_URL:
            _store = RedisPresence(settings.REDIS_URL, settings.REALTIME_PRESENCE_PREFIX)
        else:
            _store = MemoryPresence()
    return _store
