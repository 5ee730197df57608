"""Redis mode under a burst: concurrent first subscriptions and more concurrent commands than the
connection pool holds (defects 1 and 2 in docs/benchmarks.md), on a real Redis."""

from __future__ import annotations

import asyncio
import time

import pytest

from realtime_contract import Env
from realtime_gateway.fanout.bus import RedisShardedBus
from realtime_gateway.recovery.resilience import MAX_LOOP_LAG_S, PROBE_INTERVAL_S, RedisBreaker
from realtime_gateway.settings import parse_redis_url
from realtime_gateway.state.connect import open_redis
from tests.integration.gateway.conftest import Deployer, uid
from tests.integration.gateway.helpers import location
from tests.support.gateway_fixtures import EmbeddedFactory, mint_token
from tests.support.redis_server import RedisServer
from tests.support.sio import SioClient

pytestmark = pytest.mark.integration


def _handles(url: str, **kwargs: object) -> object:
    return open_redis("standalone", parse_redis_url(url), **kwargs)  # type: ignore[arg-type]


async def test_concurrent_first_subscriptions_on_a_fresh_bus_are_all_confirmed(redis_url: str) -> None:
    handles: object = _handles(redis_url)
    bus = RedisShardedBus(handles.publisher, handles.node_for_channel, handles.client_for_node)  # type: ignore[attr-defined]
    got: list[bytes] = []
    all_arrived = asyncio.Event()

    async def on_message(payload: bytes) -> None:
        got.append(payload)
        if len(got) >= 100:
            all_arrived.set()

    bus.set_handler(on_message)
    channels = [f"rtg:room:burst-{i}" for i in range(100)]
    try:
        # No subscription exists yet: every call races for the pub/sub connection.
        results = await asyncio.gather(*(bus.subscribe(c) for c in channels), return_exceptions=True)
        assert [r for r in results if r is not None] == []
        # All of them on one connection Redis knows, and its reader delivers each channel.
        counts = dict(await handles.publisher.pubsub_shardnumsub(*channels))  # type: ignore[attr-defined]
        assert {int(n) for n in counts.values()} == {1}
        for c in channels:
            await bus.publish(c, c.encode())
        await asyncio.wait_for(all_arrived.wait(), 10)
        assert sorted(got) == sorted(c.encode() for c in channels)
    finally:
        await bus.aclose()
        await handles.aclose()  # type: ignore[attr-defined]


async def test_a_burst_beyond_the_pool_waits_for_a_connection(redis_fresh: RedisServer) -> None:
    handles: object = _handles(redis_fresh.url)
    r = handles.commands  # type: ignore[attr-defined]
    pool_size = r.connection_pool.max_connections
    try:
        # Each BLPOP holds its pooled connection until it times out: more of them than the pool
        # holds must queue for a connection instead of failing with MaxConnectionsError.
        burst = pool_size + 50
        results = await asyncio.gather(
            *(r.blpop([f"empty-{i}"], timeout=0.3) for i in range(burst)), return_exceptions=True
        )
        assert [x for x in results if x is not None] == []
        assert await r.ping() is True
    finally:
        await handles.aclose()  # type: ignore[attr-defined]


async def test_a_hundred_concurrent_connects_and_subscribes_on_a_fresh_instance(
    deployer: Deployer,
) -> None:
    # The per-address connect limit is not under test: every client here comes from 127.0.0.1.
    d = await deployer("redis", **{Env.CONNECT_RATE_LIMIT: "100000/60s"})
    users = [uid("cust") for _ in range(100)]
    clients = await asyncio.gather(*(d.connect(u, "customer") for u in users), return_exceptions=True)
    refused = [c for c in clients if isinstance(c, BaseException)]
    assert refused == []
    orders = [await d.order(u) for u in users]
    acks = await asyncio.gather(
        *(c.call("order:subscribe", {"orderId": o}) for c, o in zip(clients, orders, strict=True))  # type: ignore[union-attr]
    )
    assert [a for a in acks if a.get("ok") is not True] == []


async def test_an_overloaded_event_loop_does_not_open_the_redis_breaker(
    embedded_factory: EmbeddedFactory, redis_url: str
) -> None:
    embedded = await embedded_factory(**{Env.REDIS_URL: redis_url})
    owners = [getattr(g, "__self__", None) for g in embedded.gateway.handlers.event_guards]
    breakers = [b for b in owners if isinstance(b, RedisBreaker)]
    assert len(breakers) == 1
    breaker = breakers[0]
    assert breaker._task is not None  # started with the app

    # CPU starvation: every pass of the loop runs 20 callbacks of 60 ms, so the breaker's PING
    # (which needs a few passes) overruns its timeout although Redis itself is idle.
    stop = asyncio.Event()

    def hog() -> None:
        time.sleep(0.06)  # a CPU-bound handler, not an await

    async def busy() -> None:
        while not stop.is_set():
            hog()
            await asyncio.sleep(0)

    hogs = [asyncio.create_task(busy()) for _ in range(20)]
    lagged = 0
    try:
        # Until the breaker measured the lag in several probe cycles. Every await of the breaker
        # waits for whole 1.2 s passes, so this takes ~45 s on a quiet machine: the deadline is
        # for a machine busy with other work, where it took longer than 60 s.
        async with asyncio.timeout(180):
            while lagged < 4:
                await asyncio.sleep(PROBE_INTERVAL_S)
                lagged += breaker.loop_lag > MAX_LOOP_LAG_S
    finally:
        stop.set()
        await asyncio.gather(*hogs)
    assert (breaker.trips, breaker.up) == (0, True), f"opened (lag {breaker.loop_lag:.2f}s)"
    # Served normally once the load is gone.
    client = SioClient(embedded.url, "/porter")
    try:
        # Generous deadlines: the machine may be busy with other work; correctness is the point.
        await client.connect(token=mint_token(uid("porter"), "porter"), timeout=30)
        ack = await client.call("location:update", location(), timeout=30)
        assert ack["ok"] is True, ack
    finally:
        await client.disconnect()
