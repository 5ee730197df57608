"""The benchmark's Node load generator against a real gateway, with either Socket.IO client: the lean
one (bench/reference/lean.js) must do what socket.io-client does, or the bench measures something
else."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import pytest

from bench.loadgen import Loadgen
from bench.run import ensure_node_modules
from bench.scenarios import API_KEY, SECRET, authorize_orders, envelope, make_orders, post_events
from realtime_contract import Env
from tests.support.gateway_fixtures import EmbeddedFactory

pytestmark = pytest.mark.integration

CLIENTS = ("lean", "socket.io")


@pytest.fixture(scope="module", autouse=True)
def node_modules() -> None:
    ensure_node_modules()  # npm ci once per lockfile, as bench/run does


async def _gateway_url(embedded_factory: EmbeddedFactory) -> str:
    gateway = await embedded_factory(**{Env.JWT_SECRET: SECRET, Env.API_KEY: API_KEY})
    return gateway.url


@pytest.mark.parametrize("client", CLIENTS)
async def test_location_step_delivers_every_update_to_both_subscribers(
    embedded_factory: EmbeddedFactory, tmp_path: Path, client: str
) -> None:
    url = await _gateway_url(embedded_factory)
    orders = make_orders(10, f"lg-{uuid.uuid4().hex[:6]}")
    await authorize_orders(url, orders)
    config = {
        "mode": "L",
        "secret": SECRET,
        "urls": [url],
        "orders": orders,
        "subscribersPerOrder": 2,
        "client": client,
        "connectConcurrency": 10,
    }
    gen = Loadgen(f"loadgen-{client}", config, tmp_path)
    try:
        ready = await gen.start(wait_s=60)
        assert ready["sockets"] == 30 and ready["subscribeRetries"] == 0, ready
        step = {
            "cmd": "step",
            "rate": 50,
            "seconds": 2,
            "startAt": int(time.time() * 1000) + 100,
            "drainMs": 5000,
        }
        result = await gen.command(step, wait_s=30)
    finally:
        await gen.close()
    assert result["sent"] == 100
    assert result["errors"] == {}
    # Each update reached the order's customer and admin, and each carried its send time.
    assert result["received"] == result["expected"] == 200
    assert sum(result["hist"].values()) == 200


@pytest.mark.parametrize("client", CLIENTS)
async def test_status_collect_counts_every_order_status_with_its_age(
    embedded_factory: EmbeddedFactory, tmp_path: Path, client: str
) -> None:
    """Scenario K's side: each customer gets its order's ``order:status`` and times it from
    ``occurredAt``."""
    url = await _gateway_url(embedded_factory)
    orders = make_orders(5, f"lk-{uuid.uuid4().hex[:6]}")
    await authorize_orders(url, orders)
    config = {"mode": "K", "secret": SECRET, "urls": [url], "orders": orders, "client": client}
    gen = Loadgen(f"status-{client}", config, tmp_path)
    try:
        ready = await gen.start(wait_s=60)
        assert ready["sockets"] == 5, ready
        started = int(time.time() * 1000)
        await gen.start_collect({"expect": 10, "timeoutMs": 10000, "from": started, "overMs": 25})
        statuses = [
            envelope("order.status_changed", {"orderId": o["orderId"], "status": status})
            for status in ("picked_up", "in_transit")
            for o in orders
        ]
        await post_events(url, [statuses])
        result = await gen.read(30)
    finally:
        await gen.close()
    assert (result["expected"], result["received"]) == (10, 10), result
    ages = result["hist"]
    assert sum(ages.values()) == 10 and all(0 <= int(ms) < 10000 for ms in ages), ages
    # The generator's own collections per 100 ms window (ms), for the report's diagnosis.
    assert all(0 <= ms <= 10_000 for ms in result["gcByWindow"].values()), result["gcByWindow"]


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_refused_connect_reports_the_servers_code(
    embedded_factory: EmbeddedFactory, tmp_path: Path, client: str
) -> None:
    url = await _gateway_url(embedded_factory)
    config = {
        "mode": "C",
        "secret": "not-the-gateways-secret-" + "y" * 32,
        "urls": [url],
        "connections": 3,
        "client": client,
        "settleMs": 50,
        "serverPids": [os.getpid()],
    }
    gen = Loadgen(f"refused-{client}", config, tmp_path)
    try:
        result = await asyncio.wait_for(gen.start(wait_s=60), 90)
    finally:
        await gen.close()
    # AUTH_INVALID is final: no retries, one refusal per socket, none connected.
    assert (result["connected"], result["errors"], result["connectRetries"]) == (0, 3, 0)
    assert result["connectRefusals"] == {"AUTH_INVALID": 3}
