"""Redis clients for the three topologies (RTG_REDIS_MODE) with TLS via ``rediss://``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster, Sentinel
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.sentinel import SentinelConnectionPool

from realtime_gateway.settings import RedisEndpoint, RedisMode
from realtime_gateway.state.multiplex import ClusterMultiplexer, FastRedis, Multiplexer


@dataclass
class RedisHandles:
    """``commands``: decoded-response client for the stores. ``node_for_channel`` / ``client_for_node``
    let the fan-out bus open one pub/sub connection per node that owns a channel's slot.
    ``fast``: the auto-pipelined connection(s) of the location path (rate limit, last location,
    SPUBLISH); on Cluster one per node, routed by redis-py's slot map."""

    mode: RedisMode
    commands: Any
    publisher: Any
    node_for_channel: Callable[[str], str]
    client_for_node: Callable[[str], Any]
    _extra: list[Any]
    fast: FastRedis | None = None

    async def start(self) -> None:
        """Load the cluster's slot map before the first command (the bus routes by it)."""
        if self.mode == "cluster":
            await self.commands.initialize()
            await self.publisher.initialize()

    async def ping(self) -> bool:
        return bool(await self.commands.ping())

    async def aclose(self) -> None:
        if self.fast is not None:
            await self.fast.aclose()
        for client in [self.commands, self.publisher, *self._extra]:
            await client.aclose()


# redis-py's default pool raises MaxConnectionsError once 100 connections are busy, which a burst
# of socket events reaches within milliseconds; a blocking pool makes the excess wait its turn
# (bounded, so a stuck Redis still surfaces as an error) instead of failing the event.
POOL_SIZE: Final = 100
POOL_WAIT_S: Final = 10.0


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):  # type: ignore[misc]
    """The Sentinel master lookup of SentinelConnectionPool with BlockingConnectionPool's waiting."""

    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_connections", POOL_SIZE)
        kwargs.setdefault("timeout", POOL_WAIT_S)
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]


def _standalone_client(url: str, **kwargs: Any) -> Redis:
    pool = BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE, timeout=POOL_WAIT_S, **kwargs)
    return Redis.from_pool(pool)


def tls_options(endpoint: RedisEndpoint) -> dict[str, Any]:
    """Extra redis-py options for ``rediss://`` URLs (a private CA); give them to every client."""
    return {"ssl_ca_certs": endpoint.tls_ca_file} if endpoint.tls and endpoint.tls_ca_file else {}


def _common(endpoint: RedisEndpoint) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"username": endpoint.username, "password": endpoint.password}
    if endpoint.tls:
        kwargs["ssl"] = True
        if endpoint.tls_ca_file:
            kwargs["ssl_ca_certs"] = endpoint.tls_ca_file
    return kwargs


def open_redis(mode: RedisMode, endpoint: RedisEndpoint, sentinel_master: str | None = None) -> RedisHandles:
    common = _common(endpoint)
    if mode == "standalone":
        host, port = endpoint.hosts[0]
        url = endpoint.url_for(host, port)
        tls = tls_options(endpoint)
        commands: Any = _standalone_client(url, decode_responses=True, **tls)
        publisher: Any = _standalone_client(url, **tls)
        fast: FastRedis = Multiplexer(publisher.connection_pool, name="main")
        return RedisHandles(mode, commands, publisher, lambda _c: "main", lambda _n: publisher, [], fast)
    if mode == "sentinel":
        assert sentinel_master is not None
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(endpoint.hosts),
            sentinel_kwargs=dict(common),  # the sentinels use the same credentials and TLS
            db=endpoint.db,
            **common,
        )
        commands = sentinel.master_for(
            sentinel_master, connection_pool_class=_BlockingSentinelPool, decode_responses=True
        )
        publisher = sentinel.master_for(sentinel_master, connection_pool_class=_BlockingSentinelPool)
        fast = Multiplexer(publisher.connection_pool, name="main")
        return RedisHandles(mode, commands, publisher, lambda _c: "main", lambda _n: publisher, [], fast)
    nodes = [ClusterNode(host, port) for host, port in endpoint.hosts]
    commands = RedisCluster(startup_nodes=nodes, decode_responses=True, **common)
    publisher = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in endpoint.hosts], **common)
    node_clients: dict[str, Redis] = {}

    def node_for_channel(channel: str) -> str:
        node = publisher.get_node_from_key(channel)
        return f"{node.host}:{node.port}"

    def client_for_node(name: str) -> Redis:
        client = node_clients.get(name)
        if client is None:
            host, _, port = name.rpartition(":")
            client = Redis(host=host, port=int(port), **common)
            node_clients[name] = client
            extra.append(client)
        return client

    extra: list[Any] = []
    fast = ClusterMultiplexer(publisher, client_for_node)
    return RedisHandles(mode, commands, publisher, node_for_channel, client_for_node, extra, fast)
