"""Redis failure handling: a health monitor that doubles as a circuit breaker, and the rebuild of
live sockets' state once Redis is back.

- The monitor PINGs Redis every ``PROBE_INTERVAL_S`` with a short timeout. While the probe fails
  the breaker is open: client calls are answered ``UNAVAILABLE`` at once instead of waiting on
  Redis, ``/readyz`` is false, sockets stay open.
- A call that still hits a Redis error or overruns its deadline trips the breaker and answers
  ``UNAVAILABLE`` too.
- When Redis answers again, every live socket's session, subscriptions and presence are written
  again ("rebuild state from active sockets"). If Redis lost its data (this instance's marker key
  is gone), reconnect tokens are issued again and sent in a fresh ``session`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from realtime_gateway.transport.acks import Ack, err

log = logging.getLogger(__name__)

UNAVAILABLE: Final = "UNAVAILABLE"
PROBE_INTERVAL_S: Final = 0.5
PROBE_TIMEOUT_S: Final = 1.0
MARKER_TTL_S: Final = 60
# Deadline of one client call; chat waits for the broker's acknowledgement, so it gets longer.
CALL_TIMEOUT_S: Final = 5.0
SLOW_CALLS: Final = {"chat:message:send": 15.0}

Rebuild = Callable[[bool], Awaitable[None]]
EventFn = Callable[[Any, Any], Awaitable[Ack]]


def unavailable() -> Ack:
    return err(UNAVAILABLE, "state store unavailable; retry shortly")


def marker_key(instance_id: str) -> str:
    return f"rtg:instance:{{{instance_id}}}"


class RedisBreaker:
    def __init__(self, client: Any, instance_id: str, rebuild: Rebuild) -> None:
        self._r = client
        self._instance_id = instance_id
        self._rebuild = rebuild
        self.up = True
        self._marker_known = False
        self._task: asyncio.Task[None] | None = None
        self.trips = 0
        self.rebuilds = 0

    # --- the breaker -------------------------------------------------------------------------
    def trip(self) -> None:
        if self.up:
            log.warning("redis unreachable: answering UNAVAILABLE until it is back")
        self.up = False
        self.trips += 1

    async def ready(self) -> bool:
        return self.up

    async def guard(self, conn: Any, event: str, data: Any) -> Ack | None:
        return None if self.up else unavailable()

    def guarded(self, event: str, fn: EventFn) -> EventFn:
        deadline = SLOW_CALLS.get(event, CALL_TIMEOUT_S)

        async def call(conn: Any, data: Any) -> Ack:
            try:
                return await asyncio.wait_for(fn(conn, data), deadline)
            except (RedisConnectionError, RedisTimeoutError, TimeoutError, ConnectionError):
                self.trip()
                return unavailable()

        return call

    # --- the monitor -------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="redis-breaker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _probe(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self._r.ping(), PROBE_TIMEOUT_S))
        except Exception:
            return False

    async def _marker_lost(self) -> bool:
        """True when Redis no longer has this instance's marker, i.e. it lost its data."""
        key = marker_key(self._instance_id)
        created = await self._r.set(key, "1", ex=MARKER_TTL_S, nx=True)
        if not created:
            await self._r.expire(key, MARKER_TTL_S)
        lost = bool(created) and self._marker_known
        self._marker_known = True
        return lost

    async def _run(self) -> None:
        ticks = 0
        while True:
            ok = await self._probe()
            if ok:
                try:
                    was_down = not self.up
                    if was_down or ticks % 10 == 0:
                        lost = await self._marker_lost()
                        if was_down or lost:
                            log.info("redis reachable again (data lost: %s): rebuilding socket state", lost)
                            await self._rebuild(lost)
                            self.rebuilds += 1
                    self.up = True
                except Exception:
                    log.warning("rebuild after redis recovery failed; retrying", exc_info=True)
                    ok = False
            if not ok and self.up:
                self.trip()
            ticks += 1
            await asyncio.sleep(PROBE_INTERVAL_S)
