# redis-py's cluster API carries no annotations.
# mypy: disable-error-code="no-untyped-call"
"""Smoke tests proving the Redis fixtures run real servers (standalone and a 3-master cluster)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode
from redis.exceptions import MovedError

from tests.support.procs import port_open
from tests.support.redis_server import RedisCluster, RedisServer

pytestmark = pytest.mark.integration


def test_standalone_set_with_ttl_and_get(redis_server: RedisServer, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    with r:
        info = r.info("server")
        assert int(str(info["redis_version"]).split(".")[0]) >= 7
        assert info["redis_mode"] == "standalone"
        assert info["tcp_port"] == redis_server.port
        r.set("smoke:key", "value", ex=60)
        assert r.get("smoke:key") == "value"
        assert 0 < r.ttl("smoke:key") <= 60
        r.set("smoke:short", "gone soon", px=50)
        deadline = time.monotonic() + 5
        while r.exists("smoke:short") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not r.exists("smoke:short"), "a key with a 50 ms TTL did not expire"


def test_redis_url_fixture_isolates_tests(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as r:
        assert r.dbsize() == 0


def test_fresh_server_restart_keeps_port_and_data(redis_fresh: RedisServer) -> None:
    port = redis_fresh.port
    with redis_fresh.client(decode_responses=True) as r:
        r.set("survives", "restart")
    redis_fresh.restart()
    assert redis_fresh.port == port
    with redis_fresh.client(decode_responses=True) as r:
        assert r.get("survives") == "restart"
    redis_fresh.kill()
    assert not port_open(port), "the killed server still accepts connections"
    redis_fresh.start()
    assert redis_fresh.ping()


def _channels_per_node(client: redis.RedisCluster, per_node: int) -> dict[str, list[str]]:
    """Channel names whose hash slots are owned by each master, ``per_node`` for each."""
    by_node: dict[str, list[str]] = {n.name: [] for n in client.get_primaries()}
    i = 0
    while any(len(v) < per_node for v in by_node.values()):
        channel = f"order:{i}"
        owner = client.get_node_from_key(channel)
        assert owner is not None
        if len(by_node[owner.name]) < per_node:
            by_node[owner.name].append(channel)
        i += 1
    return by_node


def test_cluster_sharded_pubsub_across_nodes(redis_cluster: RedisCluster) -> None:
    client = redis_cluster.client(decode_responses=True)
    with client:
        primaries = client.get_primaries()
        assert len(primaries) == 3
        assert {(n.host, n.port) for n in primaries} == set(redis_cluster.startup_nodes)
        by_node = _channels_per_node(client, per_node=2)
        channels = [c for cs in by_node.values() for c in cs]

        # A node that does not own a channel's slot must redirect SPUBLISH: proof the slots
        # really are spread over separate servers.
        owner_name = next(iter(by_node))
        foreign = next(n for n in primaries if n.name != owner_name)
        with (
            redis.Redis(host=foreign.host, port=foreign.port) as direct,
            pytest.raises(MovedError) as moved,
        ):
            direct.execute_command("SPUBLISH", by_node[owner_name][0], "x")
        assert f"{moved.value.host}:{moved.value.port}" == owner_name

        pubsub = client.pubsub()
        try:
            pubsub.ssubscribe(*channels)
            # One connection per owning node: sharded subscriptions really span the cluster.
            assert len(pubsub.node_pubsub_mapping) == 3
            confirmed: set[str] = set()
            deadline = time.monotonic() + 10
            while confirmed != set(channels) and time.monotonic() < deadline:
                msg = pubsub.get_sharded_message(timeout=0.2)
                if msg and msg["type"] == "ssubscribe":
                    confirmed.add(msg["channel"])
            assert confirmed == set(channels)

            for c in channels:
                assert client.spublish(c, f"hello {c}") == 1

            received: dict[str, str] = {}
            deadline = time.monotonic() + 10
            while len(received) < len(channels) and time.monotonic() < deadline:
                msg = pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0.2)
                if msg and msg["type"] == "smessage":
                    received[msg["channel"]] = msg["data"]
            assert received == {c: f"hello {c}" for c in channels}
        finally:
            pubsub.close()


def test_cluster_nodes_are_reachable_by_url(redis_cluster: RedisCluster) -> None:
    nodes = [ClusterNode(h, p) for h, p in redis_cluster.startup_nodes]
    assert redis_cluster.url == redis_cluster.urls[0]
    for url in redis_cluster.urls:
        with redis.Redis.from_url(url, decode_responses=True) as r:
            assert r.info("cluster")["cluster_enabled"] == 1
    assert len(nodes) == 3


def test_missing_redis_fails_naming_the_provisioning_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"bash tools/redis\.sh"):
        RedisServer(tmp_path / "redis").start()
