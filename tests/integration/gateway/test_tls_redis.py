"""``rediss://``: the gateway talks TLS to Redis, verifying the server with RTG_REDIS_TLS_CA_FILE."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from realtime_contract import Env
from realtime_gateway.state.redis_store import RedisOrderAccessStore
from tests.integration.gateway.conftest import uid
from tests.integration.gateway.helpers import location
from tests.support.certs import write_server_tls
from tests.support.gateway_fixtures import GatewayFactory, mint_token
from tests.support.procs import free_port
from tests.support.redis_server import RedisServer
from tests.support.sio import SioClient

pytestmark = pytest.mark.integration


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, int, Path]]:
    """A redis-server with a plain port (for the test's own seeding) and a TLS port (for the gateway)."""
    tls = write_server_tls(tmp_path)
    tls_port = free_port()
    args = [
        "--tls-port",
        str(tls_port),
        "--tls-cert-file",
        str(tls.cert_file),
        "--tls-key-file",
        str(tls.key_file),
    ]
    args += ["--tls-ca-cert-file", str(tls.ca_file), "--tls-auth-clients", "no"]
    with RedisServer(tmp_path / "redis", name="redis-tls", extra_args=args) as server:
        yield server, tls_port, tls.ca_file


async def test_gateways_over_tls_redis(
    gateway_factory: GatewayFactory, tls_redis: tuple[RedisServer, int, Path]
) -> None:
    server, tls_port, ca = tls_redis
    env = {Env.REDIS_URL: f"rediss://127.0.0.1:{tls_port}/0", "RTG_REDIS_TLS_CA_FILE": str(ca)}
    a, b = gateway_factory(**env), gateway_factory(**env)
    plain = Redis.from_url(server.url, decode_responses=True)
    customer, porter = uid("cust"), uid("porter")
    c, p = SioClient(a.url, "/client"), SioClient(b.url, "/porter")
    try:
        orders = RedisOrderAccessStore(plain)
        order_id = uid("order")
        await orders.record_created(order_id, customer)
        await orders.record_assigned(order_id, porter)
        await c.connect(token=mint_token(customer, "customer"))
        assert (await c.call("order:subscribe", {"orderId": order_id}))["ok"] is True
        await p.connect(token=mint_token(porter, "porter"))
        assert (await p.call("location:update", location(lat=6.25)))["ok"] is True
        assert (await c.next("porter:location"))["lat"] == 6.25
        # The gateways' connections really are the TLS ones: the plain port saw only this client.
        clients = await plain.client_list()
        assert sum(1 for cl in clients if cl["laddr"].endswith(f":{tls_port}")) >= 4
    finally:
        await c.disconnect()
        await p.disconnect()
        await plain.aclose()
