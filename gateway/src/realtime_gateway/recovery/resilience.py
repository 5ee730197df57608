"""Redis failure handling: a health monitor that doubles as a circuit breaker, and the rebuild of
live sockets' state once Redis is back.

- The monitor PINGs Redis every ``PROBE_INTERVAL_S`` over a connection of its own (never queued
  behind the command pool), with a short timeout. A refused or reset connection opens the breaker
  at once; a timed-out PING counts only when the event loop itself was not lagging (an
  overloaded process must not mistake its own backlog for a Redis outage), and only after
  ``TIMEOUTS_TO_OPEN`` in a row. While the breaker is open, client calls are answered
  ``UNAVAILABLE`` at once instead of waiting on Redis, ``/readyz`` is false, sockets stay open.
- A single call that hits a Redis error or overruns its deadline is answered ``UNAVAILABLE``
  but does not open the breaker: pool exhaustion and slow calls are load, not an outage.
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
TIMEOUTS_TO_OPEN: Final = 3
# A probe that timed out while the loop lagged more than this is inconclusive.
MAX_LOOP_LAG_S: Final = 0.25
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
    """``client``: the command client (marker key, rebuild); ``probe``: a client with its own
    connection for the PINGs (defaults to ``client``)."""

    def __init__(self, client: Any, instance_id: str, rebuild: Rebuild, *, probe: Any = None) -> None:
        self._r = client
        self._probe_client = probe if probe is not None else client
        self._instance_id = instance_id
        self._rebuild = rebuild
        self.up = True
        self._marker_known = False
        self._task: asyncio.Task[None] | None = None
        self._timeouts = 0
        self.loop_lag = 0.0
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
                # ``asyncio.timeout``, not ``wait_for``: on Python 3.11 wait_for runs the handler in
                # a task of its own, one more task and loop iteration per client event.
                async with asyncio.timeout(deadline):
                    return await fn(conn, data)
            except (RedisConnectionError, RedisTimeoutError, TimeoutError, ConnectionError) as exc:
                # This call failed; whether Redis is down is the probe's decision.
                log.debug("%s answered UNAVAILABLE: %r", event, exc)
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
        if self._probe_client is not self._r:
            with contextlib.suppress(Exception):
                await self._probe_client.aclose()

    async def _probe(self) -> bool | None:
        """True: Redis answered. False: it is down. None: inconclusive (our own loop lagged)."""
        try:
            answered = bool(await asyncio.wait_for(self._probe_client.ping(), PROBE_TIMEOUT_S))
        except (TimeoutError, RedisTimeoutError):
            if self.loop_lag > MAX_LOOP_LAG_S:
                return None
            self._timeouts += 1
            return None if self._timeouts < TIMEOUTS_TO_OPEN else False
        except Exception:
            self._timeouts = 0
            return False
        self._timeouts = 0
        return answered

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
        loop = asyncio.get_running_loop()
        while True:
            ok = await self._probe()
            if ok is None:  # inconclusive: keep the current state
                ok = self.up
            elif ok and (not self.up or ticks % 10 == 0):
                ok = await self._after_ok_probe(was_down=not self.up)
            if ok:
                self.up = True
            elif self.up:
                self.trip()
            ticks += 1
            before = loop.time()
            await asyncio.sleep(PROBE_INTERVAL_S)
            self.loop_lag = max(0.0, loop.time() - before - PROBE_INTERVAL_S)

    async def _after_ok_probe(self, *, was_down: bool) -> bool:
        """Refresh the marker; rebuild after an outage or a data loss. False: stay open, retry."""
        try:
            lost = await self._marker_lost()
            if was_down or lost:
                log.info("redis reachable again (data lost: %s): rebuilding socket state", lost)
                await self._rebuild(lost)
                self.rebuilds += 1
        except Exception as exc:
            log.warning("marker refresh or rebuild after redis recovery failed: %r", exc)
            # Only a pending rebuild keeps the breaker open; a busy pool is not an outage.
            return not was_down
        return True
