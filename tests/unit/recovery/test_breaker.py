"""The Redis breaker's decisions: only its own probe opens it, never a slow or failed call, and a
timed-out probe counts only when the process itself was not lagging. And the deadline of a guarded
call, enforced by a shared sweep with ``asyncio.timeout``'s semantics."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError

from realtime_gateway.recovery.resilience import (
    TIMEOUTS_TO_OPEN,
    EventFn,
    RedisBreaker,
    _Deadlines,
    unavailable,
)
from tests.support.deploy import until

pytestmark = pytest.mark.unit


class FakeRedis:
    def __init__(self) -> None:
        self.answer: Any = True
        self.keys: set[str] = set()

    async def ping(self) -> bool:
        if isinstance(self.answer, BaseException):
            raise self.answer
        return bool(self.answer)

    async def set(self, key: str, value: str, ex: int, nx: bool) -> bool:
        if key in self.keys:
            return False
        self.keys.add(key)
        return True

    async def expire(self, key: str, seconds: int) -> bool:
        return True


def breaker(sweep_interval: float = 0.25) -> tuple[RedisBreaker, FakeRedis, list[bool]]:
    redis = FakeRedis()
    rebuilds: list[bool] = []

    async def rebuild(lost: bool) -> None:
        rebuilds.append(lost)

    return RedisBreaker(redis, "gw-1", rebuild, sweep_interval=sweep_interval), redis, rebuilds


async def test_refused_connection_is_down_at_once_and_timeouts_only_in_a_row() -> None:
    b, redis, _ = breaker()
    redis.answer = RedisConnectionError("refused")
    assert await b._probe() is False
    redis.answer = TimeoutError()
    results = [await b._probe() for _ in range(TIMEOUTS_TO_OPEN)]
    assert results == [None] * (TIMEOUTS_TO_OPEN - 1) + [False]
    redis.answer = True
    assert await b._probe() is True


async def test_timeouts_while_the_loop_lags_are_inconclusive() -> None:
    b, redis, _ = breaker()
    b.loop_lag = 2.0
    redis.answer = TimeoutError()
    assert [await b._probe() for _ in range(2 * TIMEOUTS_TO_OPEN)] == [None] * (2 * TIMEOUTS_TO_OPEN)


async def test_failed_or_slow_calls_answer_unavailable_without_opening() -> None:
    b, _, _ = breaker()

    async def exhausted(conn: Any, data: Any) -> dict[str, Any]:
        raise MaxConnectionsError("Too many connections")

    async def fine(conn: Any, data: Any) -> dict[str, Any]:
        return {"ok": True}

    ack = await b.guarded("location:update", exhausted)(None, {})
    assert ack["error"]["code"] == "UNAVAILABLE"
    assert b.up and await b.guard(None, "location:update", {}) is None
    b.trip()
    assert (await b.guard(None, "order:subscribe", {}))["error"]["code"] == "UNAVAILABLE"  # type: ignore[index]
    assert await b.guarded("x", fine)(None, {}) == {"ok": True}


async def test_rebuild_after_an_outage_and_after_data_loss() -> None:
    b, redis, rebuilds = breaker()
    assert await b._after_ok_probe(was_down=False) is True and rebuilds == []  # marker created
    assert await b._after_ok_probe(was_down=True) is True and rebuilds == [False]
    redis.keys.clear()  # Redis lost its data
    assert await b._after_ok_probe(was_down=False) is True and rebuilds == [False, True]


async def test_an_outage_before_the_marker_was_ever_written_counts_as_a_loss() -> None:
    b, _, rebuilds = breaker()
    assert await b._after_ok_probe(was_down=True) is True and rebuilds == [True]
    assert await b._after_ok_probe(was_down=True) is True and rebuilds == [True, False]


async def test_a_loss_stays_pending_until_its_rebuild_completes() -> None:
    redis = FakeRedis()
    rebuilds: list[bool] = []

    async def rebuild(lost: bool) -> None:
        rebuilds.append(lost)
        if len(rebuilds) == 1:
            raise RedisConnectionError("connection reset")  # half-way: new tokens issued, not sent

    b = RedisBreaker(redis, "gw-1", rebuild)
    assert await b._after_ok_probe(was_down=False) is True  # marker created
    redis.keys.clear()  # Redis lost its data
    assert await b._after_ok_probe(was_down=True) is False  # stays open, retries
    assert await b._after_ok_probe(was_down=True) is True
    assert await b._after_ok_probe(was_down=False) is True
    assert rebuilds == [True, True] and b.rebuilds == 1


async def test_monitor_loop_opens_and_closes() -> None:
    b, redis, rebuilds = breaker()
    task = asyncio.create_task(b._run())
    try:
        await until(lambda: b._marker_known, within=5.0, what="the first marker")
        redis.answer = RedisConnectionError("refused")
        await until(lambda: not b.up, within=5.0, what="the breaker to open")
        redis.answer = True
        await until(lambda: b.up, within=5.0, what="the breaker to close")
        assert rebuilds == [False]
    finally:
        task.cancel()


# --- call deadlines ------------------------------------------------------------------------------
SWEEP = 0.02
# Headroom for a machine busy with other work; a sweep that never fires still fails the tests.
SLACK = 1.0
UNAVAILABLE_ACK = unavailable()


def deadlines_of(b: RedisBreaker) -> _Deadlines:
    return b._deadlines


async def ok(conn: Any, data: Any) -> dict[str, Any]:
    return {"ok": True}


def start(call: EventFn) -> asyncio.Task[Any]:
    """The guarded call in a task of its own, as a socket's event runs."""

    async def run() -> Any:
        return await call(None, {})

    return asyncio.create_task(run())


async def in_a_task(call: Any) -> tuple[Any, int]:
    """The guarded call's answer and its task's pending cancellations right after it."""
    ack = await call(None, {})
    task = asyncio.current_task()
    assert task is not None
    return ack, task.cancelling()


def sleeper(seconds: float, entered: asyncio.Event | None = None) -> Any:
    async def fn(conn: Any, data: Any) -> dict[str, Any]:
        if entered is not None:
            entered.set()
        await asyncio.sleep(seconds)
        return {"ok": True, "slept": seconds}

    return fn


async def test_an_overrun_call_is_answered_unavailable_after_its_deadline() -> None:
    b, _, _ = breaker(SWEEP)
    loop = asyncio.get_running_loop()
    cancelled: list[bool] = []

    async def stuck(conn: Any, data: Any) -> dict[str, Any]:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return {"ok": True}

    started = loop.time()
    ack, cancelling = await asyncio.wait_for(in_a_task(b.guarded("location:update", stuck, deadline=0.1)), 10)
    took = loop.time() - started
    assert ack["error"]["code"] == "UNAVAILABLE", ack
    assert cancelled == [True]  # the handler itself was interrupted, as asyncio.timeout does
    assert 0.1 <= took < 0.1 + SWEEP + SLACK, took
    assert cancelling == 0  # the sweep's cancellation was taken back
    assert deadlines_of(b).calls == {} and deadlines_of(b).expired == {}


async def test_the_default_deadline_comes_from_the_event() -> None:
    b, _, _ = breaker(SWEEP)
    # Well inside CALL_TIMEOUT_S: answered normally, although several sweeps ran meanwhile.
    assert await b.guarded("location:update", sleeper(0.1))(None, {}) == {"ok": True, "slept": 0.1}


async def test_an_outside_cancel_propagates() -> None:
    b, _, _ = breaker(SWEEP)
    entered = asyncio.Event()
    task = start(b.guarded("location:update", sleeper(60, entered), deadline=30))
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()  # e.g. the socket's task at a disconnect, or shutdown
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert task.cancelled()
    assert deadlines_of(b).calls == {} and deadlines_of(b).expired == {}


async def test_an_outside_cancel_in_the_same_step_as_the_sweep_propagates() -> None:
    b, _, _ = breaker(sweep_interval=60)  # the sweep is run by hand below
    entered = asyncio.Event()
    task = start(b.guarded("location:update", sleeper(60, entered), deadline=0))
    await asyncio.wait_for(entered.wait(), 5)
    d = deadlines_of(b)
    assert list(d.calls) == [task]
    task.cancel()
    d._sweep()  # the deadline (0 s) has passed: the sweep cancels it as well
    assert d.expired == {task: d.calls[task]} and task.cancelling() == 2
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert task.cancelled()
    assert d.calls == {} and d.expired == {}


async def test_an_outside_cancel_after_the_sweep_cancel_propagates() -> None:
    b, _, _ = breaker(SWEEP)
    swept, gate = asyncio.Event(), asyncio.Event()

    async def slow_cleanup(conn: Any, data: Any) -> dict[str, Any]:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            swept.set()  # cancelled by the sweep; the cleanup still awaits something
            await gate.wait()
            raise
        return {"ok": True}

    task = start(b.guarded("location:update", slow_cleanup, deadline=0.05))
    await asyncio.wait_for(swept.wait(), 5)
    assert task in deadlines_of(b).expired
    task.cancel()  # lands in the cleanup's await
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert task.cancelled()
    assert deadlines_of(b).calls == {} and deadlines_of(b).expired == {}


async def test_a_handler_that_swallows_the_sweep_cancel_keeps_its_answer() -> None:
    b, _, _ = breaker(SWEEP)

    async def stubborn(conn: Any, data: Any) -> dict[str, Any]:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            # Its deadline stays passed over several sweeps: cancelled once only.
            await asyncio.sleep(5 * SWEEP)
            return {"ok": True, "swallowed": True}
        return {"ok": True}

    ack, cancelling = await asyncio.wait_for(in_a_task(b.guarded("x", stubborn, deadline=0.05)), 5)
    assert ack == {"ok": True, "swallowed": True}
    assert cancelling == 0  # taken back, as asyncio.timeout does
    assert deadlines_of(b).expired == {}


async def test_only_the_slow_ones_of_many_concurrent_calls_time_out() -> None:
    b, _, _ = breaker(SWEEP)
    deadline = 0.3
    # Fast calls span several sweeps but stay well inside their deadline.
    fast, slow = (
        b.guarded("x", sleeper(0.05), deadline=deadline),
        b.guarded("x", sleeper(60), deadline=deadline),
    )
    calls = [slow if i % 7 == 0 else fast for i in range(300)]
    acks = await asyncio.wait_for(asyncio.gather(*(c(None, {}) for c in calls)), 20)
    for c, ack in zip(calls, acks, strict=True):
        assert ack == (UNAVAILABLE_ACK if c is slow else {"ok": True, "slept": 0.05})
    assert deadlines_of(b).calls == {} and deadlines_of(b).expired == {}


async def test_sequential_calls_in_one_task_after_an_overrun() -> None:
    # The GPS stream runs its handler in the socket's reader task, one call after the other.
    b, _, _ = breaker(SWEEP)
    fast, slow = b.guarded("x", sleeper(0.03), deadline=0.2), b.guarded("x", sleeper(60), deadline=0.1)
    acks = [await asyncio.wait_for(c(None, {}), 10) for c in (fast, slow, fast, fast, slow, ok_guarded(b))]
    assert acks == [
        {"ok": True, "slept": 0.03},
        UNAVAILABLE_ACK,
        {"ok": True, "slept": 0.03},
        {"ok": True, "slept": 0.03},
        UNAVAILABLE_ACK,
        {"ok": True},
    ]


def ok_guarded(b: RedisBreaker) -> Any:
    return b.guarded("x", ok, deadline=0.1)


async def test_nested_calls_each_keep_their_deadline() -> None:
    b, _, _ = breaker(SWEEP)
    inner_slow = b.guarded("inner", sleeper(60), deadline=0.05)

    async def outer_fn(conn: Any, data: Any) -> dict[str, Any]:
        inner = await inner_slow(conn, data)
        await asyncio.sleep(0.1)  # past the inner deadline, inside the outer one
        return {"ok": True, "inner": inner}

    ack = await asyncio.wait_for(b.guarded("outer", outer_fn, deadline=5)(None, {}), 10)
    assert ack == {"ok": True, "inner": UNAVAILABLE_ACK}

    # The outer deadline is the earlier one: the outer call times out, the inner one propagates.
    inner_seen: list[str] = []

    async def inner_fn(conn: Any, data: Any) -> dict[str, Any]:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            inner_seen.append("cancelled")
            raise
        return {"ok": True}

    inner_long = b.guarded("inner", inner_fn, deadline=30)

    async def outer_short(conn: Any, data: Any) -> dict[str, Any]:
        inner_seen.append(repr(await inner_long(conn, data)))  # never: the cancellation passes
        return {"ok": True}

    ack = await asyncio.wait_for(b.guarded("outer", outer_short, deadline=0.05)(None, {}), 10)
    assert ack == UNAVAILABLE_ACK and inner_seen == ["cancelled"]
    assert deadlines_of(b).calls == {} and deadlines_of(b).expired == {}


async def test_the_sweep_stops_when_no_call_is_in_flight() -> None:
    b, _, _ = breaker(SWEEP)
    d = deadlines_of(b)
    assert d.handle is None
    entered = asyncio.Event()
    task = start(b.guarded("x", sleeper(0.2, entered), deadline=5))
    await asyncio.wait_for(entered.wait(), 5)
    assert d.handle is not None and list(d.calls) == [task]
    await asyncio.wait_for(task, 5)
    assert d.calls == {} and d.expired == {}
    await until(lambda: d.handle is None, within=SWEEP + SLACK, what="the idle sweep to stop")
    # Nothing scheduled any more; the next call starts the sweep again.
    ack = await b.guarded("x", sleeper(60), deadline=0.05)(None, {})
    assert ack == UNAVAILABLE_ACK
    await until(lambda: d.handle is None, within=SWEEP + SLACK, what="the idle sweep to stop")
