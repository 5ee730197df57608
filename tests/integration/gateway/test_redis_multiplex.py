"""The location path's own Redis connections (state/multiplex.py) on a real Redis: the
auto-pipelined command connection, the sharded pub/sub subscriber, and the rate limiter, location
store and bus that use them."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from realtime_contract import Env
from realtime_gateway.fanout.bus import RedisShardedBus
from realtime_gateway.observability.wiring import OPERATIONS_KEY
from realtime_gateway.ratelimit import RateRule, RedisRateLimiter
from realtime_gateway.settings import parse_redis_url
from realtime_gateway.state import keys, multiplex
from realtime_gateway.state.connect import open_redis
from realtime_gateway.state.multiplex import ClusterMultiplexer, Multiplexer, Subscriber
from realtime_gateway.state.redis_store import RedisLocationStore, RedisOrderAccessStore
from tests.support.deploy import eventually
from tests.support.gateway_fixtures import EmbeddedFactory
from tests.support.redis_server import RedisCluster as RedisClusterProc
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration


def _pool(url: str) -> BlockingConnectionPool:
    return BlockingConnectionPool.from_url(url, max_connections=4)


@pytest.fixture
async def mux(redis_url: str) -> AsyncIterator[Multiplexer]:
    m = Multiplexer(_pool(redis_url), name="test")
    yield m
    await m.aclose()


async def test_concurrent_callers_each_get_their_own_reply_in_few_writes(mux: Multiplexer) -> None:
    n = 300
    await asyncio.gather(*(mux.execute("SET", f"k{i}", f"v{i}") for i in range(n)))
    writes_before = mux.writes
    values = await asyncio.gather(*(mux.execute("GET", f"k{i}") for i in range(n)))
    assert values == [f"v{i}".encode() for i in range(n)]
    # The 300 GETs were issued in one loop tick: they left together, not one write each.
    assert mux.writes - writes_before <= 3
    assert mux.connects == 1


async def test_an_error_reply_fails_only_its_caller(mux: Multiplexer) -> None:
    await mux.execute("SET", "str", "x")
    results = await asyncio.gather(
        mux.execute("INCR", "counter"),
        mux.execute("SMEMBERS", "str"),  # WRONGTYPE
        mux.execute("INCR", "counter"),
        return_exceptions=True,
    )
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], ResponseError) and "WRONGTYPE" in str(results[1])
    stored, wrong, after = await mux.execute_many([("SET", "a", "1"), ("SMEMBERS", "str"), ("GET", "a")])
    assert stored == b"OK" and isinstance(wrong, ResponseError) and after == b"1"


async def test_a_caller_that_gives_up_does_not_shift_the_replies(mux: Multiplexer) -> None:
    await mux.execute("SET", "a", "A")
    await mux.execute("SET", "b", "B")
    abandoned = asyncio.ensure_future(mux.execute("GET", "a"))
    kept = asyncio.ensure_future(mux.execute("GET", "b"))
    await asyncio.sleep(0)  # both queued
    abandoned.cancel()
    assert await kept == b"B"
    assert await mux.execute("GET", "a") == b"A"


async def test_redis_restart_fails_waiting_calls_then_reconnects(redis_fresh: RedisServer) -> None:
    m = Multiplexer(_pool(redis_fresh.url), name="restart")
    try:
        assert await m.execute("SET", "k", "before") == b"OK"
        await asyncio.to_thread(redis_fresh.kill)
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(m.execute("GET", "k"), 10)
        await asyncio.to_thread(redis_fresh.start)

        await eventually(
            lambda: m.execute("PING"), within=15, what="a reconnect", retry_on=(RedisConnectionError,)
        )
        assert m.connects == 2
        assert await m.execute("SET", "k", "after") == b"OK"
    finally:
        await m.aclose()


async def test_a_stalled_redis_fails_waiting_calls_after_the_stall_timeout(redis_fresh: RedisServer) -> None:
    m = Multiplexer(_pool(redis_fresh.url), name="stall", stall_timeout_s=1.0)
    assert redis_fresh.proc is not None
    pid = redis_fresh.proc.popen.pid
    try:
        await m.execute("PING")
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(RedisTimeoutError):
                await asyncio.wait_for(m.execute("PING"), 10)
        finally:
            os.kill(pid, signal.SIGCONT)
        await eventually(
            lambda: m.execute("PING"), within=10, what="a reconnect", retry_on=(RedisConnectionError,)
        )
    finally:
        await m.aclose()


async def test_subscriber_confirms_delivers_and_resubscribes_after_a_restart(
    redis_fresh: RedisServer,
) -> None:
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_message(payload: bytes) -> None:
        await got.put(payload)

    sub = Subscriber(_pool(redis_fresh.url), on_message, name="sub")
    publisher = Redis.from_url(redis_fresh.url)
    try:
        await asyncio.gather(*(sub.subscribe(f"ch{i}", 5) for i in range(20)))
        assert await publisher.spublish("ch7", b"\x00seven\r\n") == 1
        assert await asyncio.wait_for(got.get(), 5) == b"\x00seven\r\n"
        sub.unsubscribe("ch7")

        async def receivers(channel: str) -> int:
            return int(dict(await publisher.pubsub_shardnumsub(channel))[channel.encode()])

        async def gone(channel: str) -> bool:
            return await receivers(channel) == 0

        await eventually(lambda: gone("ch7"), within=5, what="the unsubscribe")
        await asyncio.to_thread(redis_fresh.restart)
        await publisher.connection_pool.disconnect()
        # Back on the new server: every channel still wanted is subscribed again.
        await eventually(lambda: receivers("ch3"), within=15, what="the resubscription")
        assert await receivers("ch7") == 0
        await publisher.spublish("ch3", b"three")
        assert await asyncio.wait_for(got.get(), 5) == b"three"
        assert sub.connects == 2
    finally:
        await sub.aclose()
        await publisher.aclose()


async def test_subscriber_handles_messages_in_order_when_handlers_wait_or_fail(redis_url: str) -> None:
    """Handlers start as messages are read; one that waits holds the later ones behind it, in the
    order Redis sent them, and one that fails costs only its own message."""
    started: list[int] = []
    finished: list[int] = []
    release = asyncio.Event()

    async def on_message(payload: bytes) -> None:
        n = int(payload)
        started.append(n)
        if n % 7 == 3:
            raise RuntimeError(f"handler {n} fails")
        if n == 5:
            await release.wait()  # everything after 5 queues until it is released
        elif n % 4 == 0:
            await asyncio.sleep(0)
        finished.append(n)

    sub = Subscriber(_pool(redis_url), on_message, name="order")
    publisher = Redis.from_url(redis_url)

    def when(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
        async def probe() -> bool:
            return check()

        return probe

    try:
        await sub.subscribe("order-ch", 5)
        for n in range(40):
            await publisher.spublish("order-ch", str(n).encode())
        await eventually(when(lambda: sub.received == 40), within=5, what="every message read")
        assert started == [0, 1, 2, 3, 4, 5]  # the rest wait for 5, not run past it
        release.set()
        await eventually(when(lambda: len(started) == 40), within=5, what="the queued messages handled")
        assert started == list(range(40))
        assert finished == [n for n in range(40) if n % 7 != 3]
        # The queue drained: the next message is handled as it is read again.
        await publisher.spublish("order-ch", b"41")
        await eventually(when(lambda: finished[-1] == 41), within=5, what="the next message")
    finally:
        await sub.aclose()
        await publisher.aclose()


async def test_the_wired_rate_limiter_uses_the_fast_path(
    embedded_factory: EmbeddedFactory, redis_url: str
) -> None:
    embedded = await embedded_factory(**{Env.REDIS_URL: redis_url})
    limiter = embedded.runner.app[OPERATIONS_KEY].limiter
    assert isinstance(limiter, RedisRateLimiter)
    assert limiter._fast is not None and limiter._fast is embedded.gateway.redis.fast


async def test_gateway_handles_wire_the_fast_path_for_standalone(redis_url: str) -> None:
    handles = open_redis("standalone", parse_redis_url(redis_url))
    try:
        assert isinstance(handles.fast, Multiplexer)
        bus = RedisShardedBus(
            handles.publisher, handles.node_for_channel, handles.client_for_node, handles.fast
        )
        got: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_message(payload: bytes) -> None:
            await got.put(payload)

        bus.set_handler(on_message)
        await bus.subscribe("rtg:room:order:fast")
        await bus.publish("rtg:room:order:fast", b"hello")
        assert await asyncio.wait_for(got.get(), 5) == b"hello"
        assert bus.received == 1
        await bus.aclose()
    finally:
        await handles.aclose()


async def test_location_store_fast_path_stores_and_returns_the_orders(redis_url: str) -> None:
    handles = open_redis("standalone", parse_redis_url(redis_url))
    try:
        orders = RedisOrderAccessStore(handles.commands)
        await orders.record_created("o1", "c1")
        await orders.record_assigned("o1", "p1")
        await orders.record_created("o2", "c2")
        await orders.record_assigned("o2", "p1")
        store = RedisLocationStore(handles.commands, fast=handles.fast)
        location = {"porterId": "p1", "lat": 52.5, "lng": 13.4, "timestamp": 1}
        assert await store.put("p1", location) == {"o1", "o2"}
        assert await store.put("nobody", location) == set()
        assert await store.get("p1") == location
        assert 0 < await handles.commands.ttl(keys.porter_location("p1")) <= keys.LOCATION_TTL
    finally:
        await handles.aclose()


async def test_rate_limit_fast_path_is_shared_and_survives_a_script_flush(redis_url: str) -> None:
    rules = {"location": RateRule(5, 60.0)}
    a = Multiplexer(_pool(redis_url), name="a")
    b = Multiplexer(_pool(redis_url), name="b")
    plain = Redis.from_url(redis_url)
    try:
        first = RedisRateLimiter(plain, rules, fast=a)
        second = RedisRateLimiter(plain, rules, fast=b)
        decisions = await asyncio.gather(*(lim.hit("porter-1", "location") for lim in [first, second] * 5))
        assert sum(d.allowed for d in decisions) == 5  # one bucket for both "instances"
        refused = [d for d in decisions if not d.allowed]
        assert all(d.retry_after_ms > 0 for d in refused)
        await plain.script_flush()  # e.g. Redis restarted: EVALSHA answers NOSCRIPT
        assert (await first.hit("porter-2", "location")).allowed
        assert (await second.hit("porter-2", "location")).remaining == 3
    finally:
        await a.aclose()
        await b.aclose()
        await plain.aclose()


async def test_rate_limit_fast_path_fails_open_when_redis_is_gone(redis_fresh: RedisServer) -> None:
    errors: list[str] = []
    m = Multiplexer(_pool(redis_fresh.url), name="gone")
    plain = Redis.from_url(redis_fresh.url)
    try:
        limiter = RedisRateLimiter(plain, {"location": RateRule(1, 60.0)}, on_error=errors.append, fast=m)
        assert (await limiter.hit("p", "location")).allowed
        assert not (await limiter.hit("p", "location")).allowed
        await asyncio.to_thread(redis_fresh.kill)
        assert (await asyncio.wait_for(limiter.hit("p", "location"), 10)).allowed
        assert errors == ["ratelimit"]
    finally:
        await m.aclose()
        await plain.aclose()


async def test_read_ahead_is_taken_once_and_only_while_fresh(
    mux: Multiplexer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await mux.execute("SADD", "s", "a", "b")
    assert mux.take("SMEMBERS", "s") is None  # nothing sent ahead
    mux.read_ahead("SMEMBERS", "s")
    ahead = mux.take("SMEMBERS", "s")
    assert ahead is not None and sorted(await ahead) == [b"a", b"b"]
    assert mux.take("SMEMBERS", "s") is None  # handed out once
    monkeypatch.setattr(multiplex, "READ_AHEAD_TTL_S", 0.05)
    mux.read_ahead("SMEMBERS", "s")
    await asyncio.sleep(0.1)  # the property under test is the age limit itself
    assert mux.take("SMEMBERS", "s") is None


async def test_location_update_path_reads_the_orders_with_the_rate_limit_check(redis_url: str) -> None:
    """limiter.hit (location) sends SMEMBERS porter:orders ahead; put takes it and does not wait
    for its SET; the store's get, on the same connection, sees the new location."""
    handles = open_redis("standalone", parse_redis_url(redis_url))
    try:
        assert handles.fast is not None
        orders = RedisOrderAccessStore(handles.commands)
        await orders.record_created("o1", "c1")
        await orders.record_assigned("o1", "p1")
        limiter = RedisRateLimiter(handles.commands, {"location": RateRule(100, 60.0)}, fast=handles.fast)
        store = RedisLocationStore(handles.commands, fast=handles.fast)
        assert isinstance(handles.fast, Multiplexer)
        await handles.fast.execute("PING")  # connected: before that nothing can be sent ahead
        for i in range(3):
            assert (await limiter.hit("p1", "location")).allowed
            before = handles.fast.writes
            location = {"porterId": "p1", "lat": 1.0, "lng": float(i), "timestamp": i}
            assert await store.put("p1", location) == {"o1"}
            assert handles.fast.take("SMEMBERS", keys.porter_orders("p1")) is None  # consumed
            assert handles.fast.writes == before  # no round trip of its own
            assert await store.get("p1") == location
        # A newly assigned order is seen by the next update (the read is per update, not cached).
        await orders.record_assigned("o2", "p1")
        assert (await limiter.hit("p1", "location")).allowed
        assert await store.put("p1", location) == {"o1", "o2"}
        # Other classes send nothing ahead.
        assert (await limiter.hit("p1", "general")).allowed
        assert handles.fast.take("SMEMBERS", keys.porter_orders("p1")) is None
    finally:
        await handles.aclose()


async def test_cluster_routes_each_command_to_its_slot_owner_and_follows_redirects(
    redis_cluster: RedisClusterProc,
) -> None:
    url = "redis://" + ",".join(f"{h}:{p}" for h, p in redis_cluster.startup_nodes)
    handles = open_redis("cluster", parse_redis_url(url))
    await handles.start()
    try:
        fast = handles.fast
        assert isinstance(fast, ClusterMultiplexer)
        porters = [f"cl-porter-{i}" for i in range(12)]  # spread over the three masters
        orders = RedisOrderAccessStore(handles.commands)
        for p in porters:
            await orders.record_created(f"cl-order-{p}", "c")
            await orders.record_assigned(f"cl-order-{p}", p)
        limiter = RedisRateLimiter(handles.commands, {"location": RateRule(2, 60.0)}, fast=fast)
        store = RedisLocationStore(handles.commands, fast=fast)
        for p in porters:
            assert (await limiter.hit(p, "location")).allowed
            assert await store.put(p, {"porterId": p}) == {f"cl-order-{p}"}
            assert await store.get(p) == {"porterId": p}
        assert len({fast._mux(keys.porter_orders(p)) for p in porters}) == 3  # one per master

        # A stale slot map: the command reaches a node that answers MOVED, and redis-py's
        # cluster client follows it.
        key = keys.porter_orders(porters[0])
        owner = handles.publisher.get_node_from_key(key)
        wrong = next(n for n in handles.publisher.get_primaries() if n.name != owner.name)
        real = handles.publisher.get_node_from_key
        handles.publisher.get_node_from_key = lambda k, replica=False: wrong  # type: ignore[method-assign]
        try:
            assert await fast.execute("SMEMBERS", key) == {f"cl-order-{porters[0]}".encode()}
            stored, members = await fast.execute_many(
                [("SET", "x{" + porters[0] + "}", "1"), ("SMEMBERS", key)]
            )
            assert stored is True and members == {f"cl-order-{porters[0]}".encode()}
            # ``send`` follows it too: its future gets the retried command's reply.
            sent = fast.send("SMEMBERS", key)
            assert sent is not None
            assert await asyncio.wait_for(sent, 5) == {f"cl-order-{porters[0]}".encode()}
        finally:
            handles.publisher.get_node_from_key = real  # type: ignore[method-assign]

        # The bus on Cluster: SPUBLISH through the node owning each channel.
        bus = RedisShardedBus(handles.publisher, handles.node_for_channel, handles.client_for_node, fast)
        got: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_message(payload: bytes) -> None:
            await got.put(payload)

        bus.set_handler(on_message)
        channels = [f"rtg:room:order:cl-{i}" for i in range(6)]
        for c in channels:
            await bus.subscribe(c)
        for c in channels:
            await bus.publish(c, c.encode())
        received = {await asyncio.wait_for(got.get(), 5) for _ in channels}
        assert received == {c.encode() for c in channels}
        await bus.aclose()
    finally:
        await handles.aclose()
