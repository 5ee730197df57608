"""Presence per user across instances, multi-device aware and TTL'd.

Redis: ``presence:sockets:{user}`` is a sorted set of the user's live sockets scored by the time
(ms) their registration lapses; every instance refreshes its own sockets' scores on a heartbeat,
so the sockets of an instance that died stop counting after ``ttl`` without anyone cleaning up.
``presence:last-seen:{user}`` holds when the user's last socket went away. The user is online
while any socket's score is in the future. The Lua scripts report a flip (first device online,
last device gone) so the caller can announce it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from redis.exceptions import ResponseError

from realtime_gateway.state.multiplex import FastRedis

PRESENCE_TTL_S: Final = 15
HEARTBEAT_S: Final = 5.0
# Sockets per heartbeat slice: the loop gets a turn between slices, so an instance with thousands
# of sockets does not stall its deliveries for the whole heartbeat (10,000 sockets through one
# redis-py pipeline held the loop about 100 ms every 5 s).
HEARTBEAT_SLICE: Final = 256
LAST_SEEN_TTL_S: Final = 30 * 24 * 3600

RedisClient = Any


def sockets_key(user_id: str) -> str:
    return f"presence:sockets:{{{user_id}}}"


def last_seen_key(user_id: str) -> str:
    return f"presence:last-seen:{{{user_id}}}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Presence:
    user_id: str
    online: bool
    devices: int
    last_seen: int | None  # ms since the epoch; None when never seen going offline

    def wire(self) -> dict[str, Any]:
        return {
            "userId": self.user_id,
            "online": self.online,
            "devices": self.devices,
            "lastSeen": self.last_seen,
        }


class PresenceStore(Protocol):
    async def connected(self, user_id: str, sid: str) -> bool:
        """Register a live socket; True when the user was offline before (a flip)."""
        ...

    async def disconnected(self, user_id: str, sid: str) -> int | None:
        """Drop a socket; the last-seen time (ms) when that was the user's last one, else None."""
        ...

    async def refresh(self, sockets: list[tuple[str, str]]) -> None:
        """Heartbeat for this instance's live (user_id, sid) pairs."""
        ...

    async def online(self, user_id: str) -> bool: ...
    async def query(self, user_ids: list[str]) -> list[Presence]: ...


_CONNECTED: Final = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local before = redis.call('ZCARD', KEYS[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if before == 0 then return 1 end
return 0
"""

_DISCONNECTED: Final = """
local removed = redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if removed == 1 and redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
  return 1
end
return 0
"""


class RedisPresence:
    """``fast``: the lean command connection (``state/multiplex.py``) the heartbeat uses when
    connected: its commands cost a few µs each against redis-py's pipeline's tens."""

    def __init__(
        self, client: RedisClient, *, ttl: int = PRESENCE_TTL_S, fast: FastRedis | None = None
    ) -> None:
        self._r = client
        self._fast = fast
        self.ttl = ttl

    async def connected(self, user_id: str, sid: str) -> bool:
        now = now_ms()
        flipped = await self._r.eval(
            _CONNECTED, 1, sockets_key(user_id), now, now + self.ttl * 1000, sid, self.ttl * 2000
        )
        return bool(int(flipped))

    async def disconnected(self, user_id: str, sid: str) -> int | None:
        now = now_ms()
        flipped = await self._r.eval(
            _DISCONNECTED, 2, sockets_key(user_id), last_seen_key(user_id), now, sid, LAST_SEEN_TTL_S
        )
        return now if int(flipped) else None

    async def refresh(self, sockets: list[tuple[str, str]]) -> None:
        """Every slice is written, even when an earlier one failed; the first failure is raised."""
        failure: BaseException | None = None
        for start in range(0, len(sockets), HEARTBEAT_SLICE):
            try:
                await self._refresh(sockets[start : start + HEARTBEAT_SLICE])
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    async def _refresh(self, sockets: Sequence[tuple[str, str]]) -> None:
        deadline = now_ms() + self.ttl * 1000
        keep = self.ttl * 2000
        fast = self._fast
        if fast is not None:
            replies: list[asyncio.Future[Any]] = []
            refused: list[Exception] = []
            for user_id, sid in sockets:
                key = sockets_key(user_id)
                for command in (("ZADD", key, deadline, sid), ("PEXPIRE", key, keep)):
                    reply = fast.send(*command)
                    if reply is not None:
                        replies.append(reply)
                        continue
                    # That connection is not open yet: a waited-for command opens it. A refused
                    # command fails alone, as it would in the batch; a connection error ends the slice.
                    try:
                        await fast.execute(*command)
                    except ResponseError as exc:
                        refused.append(exc)
            refused += [answer for answer in await asyncio.gather(*replies) if isinstance(answer, Exception)]
            if refused:
                raise refused[0]
            return
        async with self._r.pipeline(transaction=False) as pipe:
            for user_id, sid in sockets:
                pipe.zadd(sockets_key(user_id), {sid: deadline})
                pipe.pexpire(sockets_key(user_id), keep)
            await pipe.execute()

    async def online(self, user_id: str) -> bool:
        return int(await self._r.zcount(sockets_key(user_id), now_ms(), "+inf")) > 0

    async def query(self, user_ids: list[str]) -> list[Presence]:
        now = now_ms()
        async with self._r.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.zcount(sockets_key(user_id), now, "+inf")
                pipe.get(last_seen_key(user_id))
            raw = await pipe.execute()
        out = []
        for i, user_id in enumerate(user_ids):
            devices, seen = int(raw[2 * i]), raw[2 * i + 1]
            out.append(Presence(user_id, devices > 0, devices, int(seen) if seen is not None else None))
        return out


class MemoryPresence:
    def __init__(self, *, ttl: int = PRESENCE_TTL_S) -> None:
        self.ttl = ttl
        self._sockets: dict[str, dict[str, int]] = {}
        self._last_seen: dict[str, int] = {}

    def _live(self, user_id: str, now: int) -> dict[str, int]:
        sockets = self._sockets.get(user_id, {})
        for sid in [s for s, deadline in sockets.items() if deadline <= now]:
            del sockets[sid]
        return sockets

    async def connected(self, user_id: str, sid: str) -> bool:
        now = now_ms()
        sockets = self._live(user_id, now)
        before = len(sockets)
        sockets[sid] = now + self.ttl * 1000
        self._sockets[user_id] = sockets
        return before == 0

    async def disconnected(self, user_id: str, sid: str) -> int | None:
        now = now_ms()
        sockets = self._live(user_id, now)
        removed = sockets.pop(sid, None) is not None
        if not sockets:
            self._sockets.pop(user_id, None)
            if removed:
                self._last_seen[user_id] = now
                return now
        return None

    async def refresh(self, sockets: list[tuple[str, str]]) -> None:
        deadline = now_ms() + self.ttl * 1000
        for user_id, sid in sockets:
            self._sockets.setdefault(user_id, {})[sid] = deadline

    async def online(self, user_id: str) -> bool:
        return bool(self._live(user_id, now_ms()))

    async def query(self, user_ids: list[str]) -> list[Presence]:
        now = now_ms()
        out = []
        for user_id in user_ids:
            devices = len(self._live(user_id, now))
            out.append(Presence(user_id, devices > 0, devices, self._last_seen.get(user_id)))
        return out
