"""pytest fixtures for real Redis servers (registered in tests/conftest.py).

- ``redis_server`` (session): one standalone server shared by the whole run.
- ``redis_url`` (function): that server FLUSHALLed, as a ``redis://`` URL, for isolation.
- ``redis_fresh`` (function): a server of the test's own, for fault injection (kill/restart).
- ``redis_cluster`` (session): a 3-master Redis Cluster.
- ``any_redis`` (function, parametrized): an asyncio client of the standalone server or of the
  Cluster, emptied first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode

from tests.support.redis_server import RedisCluster, RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    with redis_server.client() as r:
        r.flushall()
    return redis_server.url


@pytest.fixture
def redis_fresh(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", name="redis-fresh") as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture(params=["standalone", "cluster"])
async def any_redis(
    request: pytest.FixtureRequest, redis_server: RedisServer, redis_cluster: RedisCluster
) -> AsyncIterator[Any]:
    client: Any
    if request.param == "standalone":
        with redis_server.client() as r:
            r.flushall()
        client = aioredis.from_url(redis_server.url)
    else:
        redis_cluster.flushall()
        client = aioredis.RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in redis_cluster.startup_nodes]
        )
    yield client
    await client.aclose()
