"""Redis down with sockets open: the breaker answers UNAVAILABLE fast, /readyz is false, the
sockets stay connected; Redis back (here after a crash that lost every key): live sockets'
state is written again, a fresh reconnect token is sent, and fan-out resumes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from realtime_contract import Env
from realtime_gateway.recovery.resilience import MARKER_TTL_S, RedisBreaker, marker_key
from realtime_gateway.state import keys
from realtime_gateway.state.redis_store import RedisOrderAccessStore
from tests.integration.reliability.conftest import LoggingClient, post_events, status_event, uid
from tests.support.deploy import eventually
from tests.support.gateway_fixtures import EmbeddedFactory, GatewayFactory, mint_token
from tests.support.procs import wait_until
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration


async def test_breaker_readiness_and_rebuild_after_a_redis_crash(
    redis_fresh: RedisServer, gateway_factory: GatewayFactory
) -> None:
    gateways = [gateway_factory(name=f"outage-gw{i}", **{Env.REDIS_URL: redis_fresh.url}) for i in range(2)]
    customer = uid("cust")
    order_id = uid("order")
    redis = Redis.from_url(redis_fresh.url, decode_responses=True)
    try:
        await RedisOrderAccessStore(redis).record_created(order_id, customer)
        c = LoggingClient(gateways[0].url, "/client")
        await c.connect(token=mint_token(customer, "customer"))
        first_token = (await c.next("session"))["reconnectToken"]
        assert (await c.call("order:subscribe", {"orderId": order_id}))["ok"] is True

        await asyncio.to_thread(redis_fresh.kill)
        for gw in gateways:
            await asyncio.to_thread(
                wait_until, lambda gw=gw: gw.readyz()[0] == 503, timeout=5, what=f"{gw.name} not ready"
            )
        started = time.monotonic()
        ack = await c.call("order:subscribe", {"orderId": order_id}, timeout=5)
        assert ack["ok"] is False and ack["error"]["code"] == "UNAVAILABLE", ack
        assert time.monotonic() - started < 1.0  # answered by the breaker, not after a timeout
        assert c.connected

        await asyncio.to_thread(redis_fresh.start)
        await redis.aclose()  # its connection died with the server
        redis = Redis.from_url(redis_fresh.url, decode_responses=True)
        for gw in gateways:
            await asyncio.to_thread(gw.wait_ready, 15)
        # Redis lost everything: the socket's state is back, with a new reconnect token.
        session = await c.next("session", timeout=10)
        assert session["reconnectToken"] != first_token and session["subscriptions"] == [order_id]

        async def registered() -> bool:
            return bool(await redis.sismember(keys.user_socket(customer), c.sio.namespaces[c.namespace]))

        await eventually(registered, within=5, what="socket registered again")
        assert await redis.sismember(keys.order_subscription(order_id), c.sio.namespaces[c.namespace])

        # Fan-out resumed on the re-subscribed channel (order access comes back from the backend).
        await RedisOrderAccessStore(redis).record_created(order_id, customer)
        await post_events(gateways[1].url, [status_event(order_id, 1)])
        got = await c.next("order:status", timeout=10)
        assert got["seq"] == 1
        # The new token restores the subscription on the other instance.
        await c.disconnect()
        c2 = LoggingClient(gateways[1].url, "/client")
        await c2.connect(auth={"reconnectToken": session["reconnectToken"]})
        assert (await c2.next("session"))["subscriptions"] == [order_id]
        await c2.disconnect()
    finally:
        await redis.aclose()


async def test_a_rebuild_during_a_connect_leaves_that_socket_one_session_with_the_new_token(
    embedded_factory: EmbeddedFactory, redis_url: str
) -> None:
    """A rebuild after a data loss that meets a socket still restoring its subscriptions (in
    ``handlers.conns``, its ``session`` not sent yet) gives it the new token without an event of
    its own: the connect's ``session`` carries the token and every restored order."""
    embedded = await embedded_factory(**{Env.REDIS_URL: redis_url})
    gateway = embedded.gateway
    breakers = [getattr(g, "__self__", None) for g in gateway.handlers.event_guards]
    breaker = next(b for b in breakers if isinstance(b, RedisBreaker))
    customer, order_id = uid("cust"), uid("order")
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        await RedisOrderAccessStore(redis).record_created(order_id, customer)
        a = LoggingClient(embedded.url, "/client")
        await a.connect(token=mint_token(customer, "customer"))
        assert (await a.call("order:subscribe", {"orderId": order_id}))["ok"] is True
        token = (await a.next("session"))["reconnectToken"]
        await a.disconnect()

        # Hold the restore of the order on its access lookup, with the socket half open.
        orders = gateway.stores.orders
        lookup, reached, release = orders.get, asyncio.Event(), asyncio.Event()

        async def held_get(order: str) -> Any:
            reached.set()
            await release.wait()
            return await lookup(order)

        orders.get = held_get  # type: ignore[method-assign]
        b = LoggingClient(embedded.url, "/client")
        connecting = asyncio.create_task(b.connect(auth={"reconnectToken": token}))
        await asyncio.wait_for(reached.wait(), 10)
        (half_open,) = [c for c in gateway.handlers.conns.values() if c.claims.user_id == customer]
        assert not half_open.announced
        issued_at_connect = half_open.reconnect_token
        await breaker._rebuild(True)
        release.set()
        await connecting
        orders.get = lookup  # type: ignore[method-assign]

        session = await b.next("session")
        assert session["reconnectToken"] == half_open.reconnect_token != issued_at_connect
        assert session["subscriptions"] == [order_id]
        # Events arrive in order: once this ack is back, nothing sent at the connect is still due.
        assert (await b.call("order:unsubscribe", {"orderId": uid("other")}))["ok"] is True
        assert [d["subscriptions"] for e, d in b.events("session")] == [[order_id]]
        await b.disconnect()
        c = LoggingClient(embedded.url, "/client")
        await c.connect(auth={"reconnectToken": session["reconnectToken"]})
        assert (await c.next("session"))["subscriptions"] == [order_id]
        await c.disconnect()
    finally:
        await redis.aclose()


async def test_the_breaker_reads_a_loss_from_its_marker_in_redis_and_keeps_it_until_rebuilt(
    redis_url: str,
) -> None:
    """The marker decisions against a real Redis: a marker that vanished is a loss, a rebuild that
    fails half-way leaves the loss pending for the next one, and an outage before the first marker
    counts as a loss."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    rebuilds: list[bool] = []

    async def rebuild(lost: bool) -> None:
        rebuilds.append(lost)
        if len(rebuilds) == 2:
            raise ConnectionError("connection reset half-way")

    try:
        instance = uid("gw")
        breaker = RedisBreaker(redis, instance, rebuild)
        assert await breaker._after_ok_probe(was_down=False) is True and rebuilds == []
        assert 0 < await redis.ttl(marker_key(instance)) <= MARKER_TTL_S
        assert await breaker._after_ok_probe(was_down=True) is True and rebuilds == [False]

        await redis.delete(marker_key(instance))  # what a Redis that lost its data shows
        assert await breaker._after_ok_probe(was_down=True) is False  # failed half-way: stays open
        assert await redis.exists(marker_key(instance))  # written by the failed attempt
        assert await breaker._after_ok_probe(was_down=True) is True
        assert await breaker._after_ok_probe(was_down=False) is True
        assert rebuilds == [False, True, True]

        late = RedisBreaker(redis, uid("gw"), rebuild)  # Redis went away before its first marker
        assert await late._after_ok_probe(was_down=True) is True and rebuilds[-1] is True
    finally:
        await redis.aclose()
