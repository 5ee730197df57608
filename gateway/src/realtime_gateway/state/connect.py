"""Redis clients for the three topologies (RTG_REDIS_MODE) with TLS via ``rediss://``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis, RedisCluster, Sentinel
from redis.asyncio.cluster import ClusterNode

from realtime_gateway.settings import RedisEndpoint, RedisMode


@dataclass
class RedisHandles:
    """``commands``: decoded-response client for the stores. ``node_for_channel`` / ``client_for_node``
    let the fan-out bus open one pub/sub connection per node that owns a channel's slot."""

    mode: RedisMode
    commands: Any
    publisher: Any
    node_for_channel: Callable[[str], str]
    client_for_node: Callable[[str], Any]
    _extra: list[Any]

    async def start(self) -> None:
        """Load the cluster's slot map before the first command (the bus routes by it)."""
        if self.mode == "cluster":
            await self.commands.initialize()
            await self.publisher.initialize()

    async def ping(self) -> bool:
        return bool(await self.commands.ping())

    async def aclose(self) -> None:
        for client in [self.commands, self.publisher, *self._extra]:
            await client.aclose()


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
        commands: Any = Redis.from_url(url, decode_responses=True, **tls)
        publisher: Any = Redis.from_url(url, **tls)
        return RedisHandles(mode, commands, publisher, lambda _c: "main", lambda _n: publisher, [])
    if mode == "sentinel":
        assert sentinel_master is not None
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(endpoint.hosts),
            sentinel_kwargs=dict(common),  # the sentinels use the same credentials and TLS
            db=endpoint.db,
            **common,
        )
        commands = sentinel.master_for(sentinel_master, decode_responses=True)
        publisher = sentinel.master_for(sentinel_master)
        return RedisHandles(mode, commands, publisher, lambda _c: "main", lambda _n: publisher, [])
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
    return RedisHandles(mode, commands, publisher, node_for_channel, client_for_node, extra)
