"""Redis failure handling: a health monitor that doubles as a circuit breaker, and the rebuild of
live sockets' state once Redis is back.

- The monitor PINGs Redis every ``PROBE_INTERVAL_S`` over a connection of its own (never queued
  behind the command pool), with a short timeout. A refused or reset connection opens the breaker
  at once; a timed-out PING counts only when the event loop itself was not lagging (an
  overloaded process must not mistake its own backlog for a Redis outage), and only after
  ``TIMEOUTS_TO_OPEN`` in a row. While the breaker is open, client calls are answered
  ``UNAVAILABLE`` at once instead of waiting on Redis, ``/readyz`` is false, sockets stay open.
- A single call that hits a Redis error or overruns its deadline is answered ``UNAVAILABLE``
  but does not open the breaker: pool exhaustion and slow calls are load, not an outage. The
  deadlines are enforced by one periodic sweep over the calls in flight (``_Deadlines``), not by
  a timer per client event.
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

from realtime_gateway.tasks import stop_tasks
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
# How often the calls in flight are checked against their deadlines. The deadlines are seconds
# long and only bound a stuck call, so answering up to a quarter second late changes nothing for
# a client, and four timer callbacks a second replace a timer per client event.
SWEEP_INTERVAL_S: Final = 0.25

Rebuild = Callable[[bool], Awaitable[None]]
EventFn = Callable[[Any, Any], Awaitable[Ack]]


def unavailable() -> Ack:
    return err(UNAVAILABLE, "state store unavailable; retry shortly")


def marker_key(instance_id: str) -> str:
    return f"rtg:instance:{{{instance_id}}}"


class _Deadlines:
    """The deadlines of the guarded calls in flight and the one timer that enforces them.

    ``asyncio.timeout`` per call schedules and cancels a timer handle and builds a context
    object for every client event (about 8 % of the gateway's CPU under GPS load). Here a call
    records its task's deadline in ``calls`` and removes it when it ends; while any call is in
    flight a sweep runs every ``interval`` seconds and cancels the tasks whose deadline passed,
    noting in ``expired`` which deadline it cancelled them for, so that the call owning that
    deadline (and no other cancellation) turns into a timeout. The sweep stops when idle.
    """

    __slots__ = ("calls", "expired", "handle", "interval", "loop")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        # Task -> the earliest deadline (loop time) of its calls in flight.
        self.calls: dict[asyncio.Task[Any], float] = {}
        # Task -> the deadline it was cancelled for, until that call ends.
        self.expired: dict[asyncio.Task[Any], float] = {}
        self.handle: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.loop is not loop:
            # A new event loop: whatever the old one left can no longer run.
            if self.handle is not None:
                self.handle.cancel()
            self.calls.clear()
            self.expired.clear()
            self.loop = loop
        self.handle = loop.call_later(self.interval, self._sweep)

    def _sweep(self) -> None:
        self.handle = None
        loop = self.loop
        if not self.calls or loop is None:
            return  # idle: the next guarded call starts the sweep again
        now = loop.time()
        expired = self.expired
        for task, when in list(self.calls.items()):
            if when <= now and task not in expired:
                expired[task] = when
                task.cancel()
        self.handle = loop.call_later(self.interval, self._sweep)


class RedisBreaker:
    """``client``: the command client (marker key, rebuild); ``probe``: a client with its own
    connection for the PINGs (defaults to ``client``)."""

    def __init__(
        self,
        client: Any,
        instance_id: str,
        rebuild: Rebuild,
        *,
        probe: Any = None,
        sweep_interval: float = SWEEP_INTERVAL_S,
    ) -> None:
        self._r = client
        self._probe_client = probe if probe is not None else client
        self._instance_id = instance_id
        self._rebuild = rebuild
        self.up = True
        self._marker_known = False
        # A data loss whose rebuild has not completed yet (see ``_after_ok_probe``).
        self._loss_pending = False
        self._task: asyncio.Task[None] | None = None
        self._timeouts = 0
        self.loop_lag = 0.0
        self.trips = 0
        self.rebuilds = 0
        self._deadlines = _Deadlines(sweep_interval)

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

    def guarded(self, event: str, fn: EventFn, *, deadline: float | None = None) -> EventFn:
        """``fn`` answered ``UNAVAILABLE`` when it hits a Redis error or overruns its deadline
        (``SLOW_CALLS[event]``, else ``CALL_TIMEOUT_S``; ``deadline`` overrides both)."""
        seconds = SLOW_CALLS.get(event, CALL_TIMEOUT_S) if deadline is None else deadline
        deadlines = self._deadlines
        calls, expired = deadlines.calls, deadlines.expired
        current_task, running_loop = asyncio.current_task, asyncio.get_running_loop

        # The bookkeeping is written out here rather than in methods of ``_Deadlines``: this runs
        # for every client event, thousands per second, and each call of a method costs.
        async def call(conn: Any, data: Any) -> Ack:
            loop = running_loop()
            task = current_task(loop)  # given the loop, it does not look it up again
            if task is None:
                raise RuntimeError("a guarded call runs in a task")
            if deadlines.handle is None or deadlines.loop is not loop:
                deadlines.start(loop)
            when = loop.time() + seconds
            # A nested call (none today) inherits the earlier deadline of the call around it.
            outer = calls.get(task)
            calls[task] = when if outer is None or when < outer else outer
            cancelling = task.cancelling()
            timed_out = False
            try:
                try:
                    return await fn(conn, data)
                finally:
                    if outer is None:
                        del calls[task]
                    else:
                        calls[task] = outer
                    # As ``asyncio.timeout`` does: take back the sweep's cancellation (also when
                    # ``fn`` swallowed it); it becomes a timeout only if nobody else cancelled too.
                    if expired and expired.get(task) == when:
                        del expired[task]
                        timed_out = task.uncancel() <= cancelling
            except asyncio.CancelledError:
                if not timed_out:
                    raise
                log.debug("%s answered UNAVAILABLE: %r", event, TimeoutError(f"over {seconds} s"))
                return unavailable()
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
            await stop_tasks(self._task)
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

    async def _marker_lost(self, *, was_down: bool) -> bool:
        """True when Redis no longer has this instance's marker, i.e. it lost its data. After an
        outage a marker never written counts as lost too: sockets may have written their state
        before the first probe, and a needless rebuild costs each socket one ``session`` event,
        where a missed one leaves clients with reconnect tokens Redis no longer has."""
        key = marker_key(self._instance_id)
        created = await self._r.set(key, "1", ex=MARKER_TTL_S, nx=True)
        if not created:
            await self._r.expire(key, MARKER_TTL_S)
        lost = bool(created) and (self._marker_known or was_down)
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
            # A loss stays pending until its rebuild completes: the marker written by the attempt
            # that failed half-way would read as "not lost" at the next one, and sockets whose new
            # reconnect tokens were not sent yet would never get them.
            self._loss_pending = await self._marker_lost(was_down=was_down) or self._loss_pending
            lost = self._loss_pending
            if was_down or lost:
                log.info("redis reachable again (data lost: %s): rebuilding socket state", lost)
                await self._rebuild(lost)
                self._loss_pending = False
                self.rebuilds += 1
        except Exception as exc:
            log.warning("marker refresh or rebuild after redis recovery failed: %r", exc)
            # Only a pending rebuild keeps the breaker open; a busy pool is not an outage.
            return not was_down
        return True
