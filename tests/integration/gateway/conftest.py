"""Deployments of the gateway for the integration tests: embedded (in-process), one or more
processes on a standalone Redis, or on the 3-node Redis Cluster."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import RedisCluster

from realtime_gateway.state.keys import room_channel
from realtime_gateway.state.redis_store import RedisOrderAccessStore
from tests.support.deploy import ROLE_NAMESPACE, redis_target, seed_order, uid
from tests.support.gateway_fixtures import EmbeddedFactory, GatewayFactory, mint_token
from tests.support.gateway_proc import GatewayProcess
from tests.support.sio import SioClient

# Re-exported: the tests of this directory and of tests/integration/reliability import them here.
__all__ = ["ROLE_NAMESPACE", "Deployer", "Deployment", "uid"]


@dataclass
class Deployment:
    kind: str
    urls: list[str]
    procs: list[GatewayProcess]
    orders: Any  # an OrderAccessStore seeded from the test process
    redis: Any  # decoded-response client for inspecting keys (None when embedded)
    embedded: Any = None  # the EmbeddedGateway (None for processes)
    clients: list[SioClient] = field(default_factory=list)

    async def order(self, customer_id: str, porter_id: str | None = None) -> str:
        return await seed_order(self.orders, customer_id, porter_id)

    async def connect(self, user_id: str, role: str, instance: int = 0, **kwargs: Any) -> SioClient:
        client = SioClient(self.urls[instance], ROLE_NAMESPACE[role])
        self.clients.append(client)
        return await client.connect(token=mint_token(user_id, role), **kwargs)

    async def client(self, namespace: str, instance: int = 0) -> SioClient:
        """An unconnected client (for refusal tests); disconnected at teardown."""
        client = SioClient(self.urls[instance], namespace)
        self.clients.append(client)
        return client

    async def room_subscribers(self, room: str) -> int:
        """How many connections Redis has subscribed to the room's sharded channel."""
        assert self.redis is not None
        channel = room_channel(room)
        if isinstance(self.redis, RedisCluster):
            # Ask the node owning the channel's slot (redis-py would pick any node).
            node = self.redis.get_node_from_key(channel)
            result = await self.redis.execute_command("PUBSUB SHARDNUMSUB", channel, target_nodes=node)
        else:
            result = await self.redis.pubsub_shardnumsub(channel)
        [(_, count)] = result
        return int(count)

    def fanout(self, instance: int) -> dict[str, Any]:
        if self.embedded is not None:
            stats: dict[str, Any] = self.embedded.gateway.manager.stats()
            return stats
        return self.procs[instance].fanout_stats()


Deployer = Callable[..., Awaitable[Deployment]]


@pytest.fixture(params=["embedded", "redis"])
def single_kind(request: pytest.FixtureRequest) -> str:
    """The core tests run on both the embedded mode and a Redis-backed process."""
    return str(request.param)


@pytest.fixture(params=["redis", "cluster"])
def multi_kind(request: pytest.FixtureRequest) -> str:
    """Multi-instance tests run on a standalone Redis and on the 3-node Redis Cluster."""
    return str(request.param)


@pytest.fixture
async def deployer(
    request: pytest.FixtureRequest, gateway_factory: GatewayFactory, embedded_factory: EmbeddedFactory
) -> AsyncIterator[Deployer]:
    deployments: list[Deployment] = []
    closers: list[Any] = []

    async def deploy(kind: str, instances: int = 1, **env: Any) -> Deployment:
        if kind == "embedded":
            assert instances == 1, "the embedded mode is one process"
            embedded = await embedded_factory(**env)
            d = Deployment(kind, [embedded.url], [], embedded.gateway.stores.orders, None, embedded)
        else:
            redis, redis_env = redis_target(request, cluster=kind == "cluster")
            env = {**redis_env, **env}
            closers.append(redis)
            procs = [gateway_factory(name=f"{kind}-gw{i}", **env) for i in range(instances)]
            d = Deployment(kind, [p.url for p in procs], procs, RedisOrderAccessStore(redis), redis)
        deployments.append(d)
        return d

    yield deploy
    for d in deployments:
        for client in d.clients:
            await client.disconnect()
    for redis in closers:
        await redis.aclose()


@pytest.fixture
def no_automatic_collection() -> Iterator[None]:
    """Whatever is left in a reference cycle stays alive, where the test can count it."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
