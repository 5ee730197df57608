"""The Redis breaker's decisions: only its own probe opens it, never a slow or failed call, and a
timed-out probe counts only when the process itself was not lagging."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError

from realtime_gateway.recovery.resilience import TIMEOUTS_TO_OPEN, RedisBreaker

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


def breaker() -> tuple[RedisBreaker, FakeRedis, list[bool]]:
    redis = FakeRedis()
    rebuilds: list[bool] = []

    async def rebuild(lost: bool) -> None:
        rebuilds.append(lost)

    return RedisBreaker(redis, "gw-1", rebuild), redis, rebuilds


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


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_monitor_loop_opens_and_closes() -> None:
    b, redis, rebuilds = breaker()
    task = asyncio.create_task(b._run())
    try:
        redis.answer = RedisConnectionError("refused")
        await until(lambda: not b.up)
        redis.answer = True
        await until(lambda: b.up)
        assert rebuilds == [False]
    finally:
        task.cancel()
