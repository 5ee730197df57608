"""Redis topologies beyond standalone and Cluster: Sentinel (the gateway finds the master through
the sentinels for both its commands and its sharded pub/sub)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from realtime_contract import Env
from tests.integration.gateway.conftest import Deployer, uid
from tests.integration.gateway.helpers import location
from tests.support.procs import ManagedProcess, free_port, wait_until
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

MASTER = "rtg-master"


@pytest.fixture
def sentinel(redis_fresh: RedisServer, tmp_path: Path) -> Iterator[int]:
    """One redis-sentinel (``redis-server --sentinel``) monitoring ``redis_fresh``; yields its port."""
    port = free_port()
    conf = tmp_path / "sentinel.conf"  # the sentinel rewrites its config file: give it its own
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {redis_fresh.port} 1\n"
        f"sentinel down-after-milliseconds {MASTER} 5000\n"
    )
    binary = shutil.which("redis-server")
    assert binary, "redis-server missing: run `bash tools/redis.sh`"
    proc = ManagedProcess("sentinel", [binary, str(conf), "--sentinel"], tmp_path)

    def master_known() -> bool:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1) as r:
            addr = r.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
            return bool(addr) and int(addr[1]) == redis_fresh.port

    try:
        wait_until(master_known, timeout=20, what="sentinel to know the master", proc=proc)
        yield port
    finally:
        proc.stop()


async def test_sentinel_mode_fans_out_across_two_instances(
    deployer: Deployer, sentinel: int, redis_fresh: RedisServer
) -> None:
    env = {
        Env.REDIS_MODE: "sentinel",
        Env.REDIS_URL: f"redis://127.0.0.1:{sentinel}/0",
        Env.REDIS_SENTINEL_MASTER: MASTER,
    }
    d = await deployer("redis", instances=2, **env)
    assert d.procs[0].readyz()[1]["mode"] == "redis-sentinel"
    # The deployment's own seeding client points at the redis_url server: seed the master instead.
    from redis.asyncio import Redis

    from realtime_gateway.state.redis_store import RedisOrderAccessStore

    master = Redis.from_url(redis_fresh.url, decode_responses=True)
    try:
        d.orders = RedisOrderAccessStore(master)
        customer, porter = uid("cust"), uid("porter")
        order_id = await d.order(customer, porter)
        c = await d.connect(customer, "customer", instance=0)
        assert (await c.call("order:subscribe", {"orderId": order_id}))["ok"] is True
        p = await d.connect(porter, "porter", instance=1)
        assert (await p.call("location:update", location(lat=4.5)))["ok"] is True
        assert (await c.next("porter:location"))["lat"] == 4.5
        assert await master.exists(f"porter:location:{{{porter}}}") == 1
    finally:
        await master.aclose()
