"""Helpers shared by the tests that deploy gateways (or other workloads) and wait on them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode

from realtime_contract import Env

ROLE_NAMESPACE = {"customer": "/client", "porter": "/porter", "admin": "/admin"}


def uid(prefix: str) -> str:
    """Unique ids keep tests independent on the shared (never flushed) Redis and Kafka."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def eventually(
    probe: Callable[[], Awaitable[Any]],
    *,
    within: float,
    what: str,
    interval: float = 0.05,
    retry_on: tuple[type[Exception], ...] = (),
) -> Any:
    """Poll an async probe until it returns something truthy; fail after ``within`` seconds.

    Exceptions of the ``retry_on`` types count as "not yet" (e.g. an API error while an object is
    still being created)."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await probe()
            if last:
                return last
        except retry_on as exc:
            last = exc
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {within}s waiting for {what} (last: {last!r})")


async def until(condition: Callable[[], Any], *, within: float, what: str, interval: float = 0.05) -> Any:
    """:func:`eventually` for a condition that needs no await."""

    async def probe() -> Any:
        return condition()

    return await eventually(probe, within=within, what=what, interval=interval)


async def seed_order(orders: Any, customer_id: str, porter_id: str | None) -> str:
    """A new order as the backend records it: created for the customer, assigned to the porter."""
    order_id = uid("order")
    await orders.record_created(order_id, customer_id)
    if porter_id is not None:
        await orders.record_assigned(order_id, porter_id)
    return order_id


def redis_target(request: pytest.FixtureRequest, cluster: bool) -> tuple[Any, dict[str, str]]:
    """A decoded-response client for inspecting keys, and the gateway env pointing at the same
    Redis: the session standalone server or the 3-node Redis Cluster."""
    if cluster:
        nodes = request.getfixturevalue("redis_cluster").startup_nodes
        client: Any = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes], decode_responses=True)
        hosts = ",".join(f"{h}:{p}" for h, p in nodes)
        return client, {Env.REDIS_URL: f"redis://{hosts}", Env.REDIS_MODE: "cluster"}
    url = request.getfixturevalue("redis_url")
    return Redis.from_url(url, decode_responses=True), {Env.REDIS_URL: url}
