"""The Lua token bucket against a real Redis (standalone and Cluster)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis, RedisCluster

from realtime_gateway.ratelimit import RateRule, RedisRateLimiter, bucket_key
from tests.support.procs import free_port
from tests.support.redis_server import RedisCluster as ClusterProc

pytestmark = pytest.mark.integration


@pytest.fixture
async def two_clients(redis_url: str) -> AsyncIterator[tuple[Redis, Redis]]:
    # Two connections stand for two gateway instances sharing the Redis.
    a, b = Redis.from_url(redis_url), Redis.from_url(redis_url)
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()


async def test_flood_across_two_instances_gets_exactly_the_burst(two_clients: tuple[Redis, Redis]) -> None:
    a, b = two_clients
    la, lb = RedisRateLimiter(a), RedisRateLimiter(b)
    results = await asyncio.gather(*[(la if i % 2 else lb).hit("user-1", "general") for i in range(120)])
    assert sum(r.allowed for r in results) == 100
    refused = [r for r in results if not r.allowed]
    assert len(refused) == 20 and all(0 < r.retry_after_ms <= 600 for r in refused)
    ttl = await a.pttl(bucket_key("general", "user-1"))
    assert 0 < ttl <= 61_000


async def test_classes_and_users_have_their_own_buckets(two_clients: tuple[Redis, Redis]) -> None:
    a, _ = two_clients
    rules = {"general": RateRule(2, 60), "location": RateRule(3, 60), "chat": RateRule(1, 60)}
    limiter = RedisRateLimiter(a, rules)
    assert [(await limiter.hit("u", "general")).allowed for _ in range(3)] == [True, True, False]
    assert [(await limiter.hit("u", "location")).allowed for _ in range(4)] == [True, True, True, False]
    assert [(await limiter.hit("u", "chat")).allowed for _ in range(2)] == [True, False]
    assert (await limiter.hit("other", "general")).allowed


async def test_bucket_refills_over_a_short_window(two_clients: tuple[Redis, Redis]) -> None:
    a, b = two_clients
    rules = {"chat": RateRule(5, 1.0)}
    la, lb = RedisRateLimiter(a, rules), RedisRateLimiter(b, rules)
    assert all([(await la.hit("u", "chat")).allowed for _ in range(5)])
    denied = await lb.hit("u", "chat")
    assert not denied.allowed and 0 < denied.retry_after_ms <= 200
    start = time.monotonic()
    deadline = start + 3.0
    while not (await lb.hit("u", "chat")).allowed:
        assert time.monotonic() < deadline, "bucket never refilled"
        await asyncio.sleep(0.02)
    # One token every 200 ms; the refill cannot come much sooner than announced.
    assert time.monotonic() - start >= (denied.retry_after_ms - 50) / 1000
    # After a full window the whole burst is back, and never more.
    await asyncio.sleep(1.05)
    assert sum([(await la.hit("u", "chat")).allowed for _ in range(8)]) == 5


async def test_fails_open_and_reports_when_redis_is_unreachable() -> None:
    errors: list[str] = []
    dead = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    try:
        limiter = RedisRateLimiter(dead, on_error=errors.append)
        decision = await limiter.hit("u", "general")
    finally:
        await dead.aclose()
    assert decision.allowed
    assert errors == ["ratelimit"]


async def test_works_on_redis_cluster(redis_cluster: ClusterProc) -> None:
    host, port = redis_cluster.startup_nodes[0]
    rc = RedisCluster(host=host, port=port)
    try:
        limiter = RedisRateLimiter(rc, {"general": RateRule(3, 60)})
        users = [f"user-{i}" for i in range(6)]  # spread over slots and masters
        for u in users:
            assert [(await limiter.hit(u, "general")).allowed for _ in range(4)] == [True, True, True, False]
    finally:
        await rc.aclose()
