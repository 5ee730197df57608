"""Per-user offline queue for ``notification`` and ``job:offer`` (bounded, TTL'd).

An event is queued only when the user has no live socket on any instance; the check and the push
are one Lua script over the presence set and the queue (same hash tag), and a connecting socket
is registered in presence before the queue is read, so an event is either queued and drained or
delivered live, never neither. Drained items are sent with a Socket.IO ack; an item is removed
from the queue only when the client acknowledged it, so a client that vanished mid-delivery gets
it again on its next connect.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Final, Protocol

import orjson

from realtime_gateway.presence.store import now_ms, sockets_key

QUEUE_SIZE: Final = 100
QUEUE_TTL_S: Final = 7 * 24 * 3600

RedisClient = Any


def queue_key(user_id: str) -> str:
    return f"offline:queue:{{{user_id}}}"


@dataclass(frozen=True, slots=True)
class Queued:
    raw: str  # the stored form; removal is by exact value
    event: str
    data: Any


class OfflineQueue(Protocol):
    async def enqueue_if_offline(self, user_id: str, event: str, data: Any) -> bool: ...
    async def pending(self, user_id: str) -> list[Queued]: ...
    async def remove(self, user_id: str, item: Queued) -> None: ...


def _encode(event: str, data: Any) -> str:
    return orjson.dumps({"id": uuid.uuid4().hex, "e": event, "d": data, "t": now_ms()}).decode()


def _decode(raw: Any) -> Queued:
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    item = orjson.loads(text)
    return Queued(text, item["e"], item["d"])


_ENQUEUE: Final = """
if redis.call('ZCOUNT', KEYS[1], ARGV[1], '+inf') > 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""


class RedisOfflineQueue:
    def __init__(self, client: RedisClient, *, size: int = QUEUE_SIZE, ttl: int = QUEUE_TTL_S) -> None:
        self._r = client
        self.size = size
        self.ttl = ttl

    async def enqueue_if_offline(self, user_id: str, event: str, data: Any) -> bool:
        queued = await self._r.eval(
            _ENQUEUE, 2, sockets_key(user_id), queue_key(user_id), now_ms(), _encode(event, data),
            self.size, self.ttl,
        )  # fmt: skip
        return bool(int(queued))

    async def pending(self, user_id: str) -> list[Queued]:
        return [_decode(raw) for raw in await self._r.lrange(queue_key(user_id), 0, -1)]

    async def remove(self, user_id: str, item: Queued) -> None:
        await self._r.lrem(queue_key(user_id), 1, item.raw)


class Online(Protocol):
    async def online(self, user_id: str) -> bool: ...


class MemoryOfflineQueue:
    def __init__(self, presence: Online, *, size: int = QUEUE_SIZE, ttl: int = QUEUE_TTL_S) -> None:
        self._presence = presence
        self.size = size
        self.ttl = ttl
        self._queues: dict[str, tuple[float, deque[str]]] = {}

    async def enqueue_if_offline(self, user_id: str, event: str, data: Any) -> bool:
        if await self._presence.online(user_id):
            return False
        now = time.time()
        entry = self._queues.get(user_id)
        items = entry[1] if entry is not None and entry[0] > now else deque(maxlen=self.size)
        items.append(_encode(event, data))
        self._queues[user_id] = (now + self.ttl, items)
        return True

    async def pending(self, user_id: str) -> list[Queued]:
        entry = self._queues.get(user_id)
        if entry is None or entry[0] < time.time():
            self._queues.pop(user_id, None)
            return []
        return [_decode(raw) for raw in entry[1]]

    async def remove(self, user_id: str, item: Queued) -> None:
        entry = self._queues.get(user_id)
        if entry is not None:
            try:
                entry[1].remove(item.raw)
            except ValueError:
                return
            if not entry[1]:
                del self._queues[user_id]
