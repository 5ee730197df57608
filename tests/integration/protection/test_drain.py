"""SIGTERM during traffic: the instance stops being ready, refuses new sockets, moves its clients
to another instance through the load balancer, and exits 0 within RTG_DRAIN_SECONDS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import socketio

from realtime_contract import Env
from tests.integration.protection.conftest import Stack, scrape, uid
from tests.integration.protection.lb import ReadinessBalancer
from tests.support.deploy import until
from tests.support.gateway_fixtures import mint_token
from tests.support.gateway_proc import http_json
from tests.support.sio import ConnectRefused

pytestmark = pytest.mark.integration

DRAIN_SECONDS = 5.0


class Watcher:
    """A customer app: reconnects on its own and re-subscribes to its order after each connect."""

    def __init__(self, url: str, user: str, order: str) -> None:
        self.url = url
        self.order = order
        self.sio = socketio.AsyncClient(
            reconnection=True, reconnection_delay=0.1, reconnection_delay_max=0.5, randomization_factor=0.2
        )
        self.token = mint_token(user, "customer")
        self.locations: list[float] = []  # arrival times
        self.connects = 0
        self.disconnects = 0
        self.drain_notices = 0
        self.subscribed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.sio.on("connect", self._on_connect, namespace="/client")
        self.sio.on("disconnect", self._on_disconnect, namespace="/client")
        self.sio.on("porter:location", self._on_location, namespace="/client")
        self.sio.on("server:draining", self._on_drain, namespace="/client")

    async def _on_connect(self) -> None:
        self.connects += 1
        task = asyncio.create_task(self._subscribe())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _subscribe(self) -> None:
        ack = await self.sio.call("order:subscribe", {"orderId": self.order}, namespace="/client", timeout=5)
        if ack.get("ok"):
            self.subscribed.set()

    async def _on_disconnect(self, reason: Any = None) -> None:
        self.disconnects += 1
        self.subscribed.clear()

    async def _on_location(self, data: Any) -> None:
        self.locations.append(time.monotonic())

    async def _on_drain(self, data: Any) -> None:
        self.drain_notices += 1

    async def start(self) -> None:
        await self.sio.connect(
            self.url,
            namespaces=["/client"],
            transports=["websocket"],
            auth={"token": self.token},
            wait_timeout=10,
        )
        await asyncio.wait_for(self.subscribed.wait(), 10)

    async def stop(self) -> None:
        await self.sio.disconnect()
        for task in list(self._tasks):
            task.cancel()


@pytest.fixture
async def balancer_cleanup() -> AsyncIterator[list[ReadinessBalancer]]:
    made: list[ReadinessBalancer] = []
    yield made
    for lb in made:
        await lb.stop()


async def test_sigterm_moves_clients_and_exits_zero_within_the_drain_time(
    stack: Stack, balancer_cleanup: list[ReadinessBalancer]
) -> None:
    env = {Env.DRAIN_SECONDS: str(DRAIN_SECONDS)}
    a, b = stack.start("drain-a", **env), stack.start("drain-b", **env)
    lb = ReadinessBalancer([("127.0.0.1", a.port), ("127.0.0.1", b.port)])
    balancer_cleanup.append(await lb.start())
    await until(lambda: all(lb.ready), within=10, what="both backends ready at the balancer")

    porter, customers = uid("porter"), [uid("cust") for _ in range(4)]
    orders = [await stack.order(c, porter) for c in customers]
    watchers = [Watcher(lb.url, c, o) for c, o in zip(customers, orders, strict=True)]
    for w in watchers:
        await w.start()
    assert lb.routed[0] >= 4 and lb.routed[1] == 0, "all watchers start on instance A"
    # The porter talks to B directly and keeps sending while A drains.
    p = await stack.connect(b, porter, "porter")
    for order in orders:
        assert (await p.call("order:subscribe", {"orderId": order}))["ok"] is True

    stop_sending = asyncio.Event()

    async def send_locations() -> None:
        while not stop_sending.is_set():
            ack = await p.call(
                "location:update", {"lat": 52.5, "lng": 13.4, "timestamp": int(time.time() * 1000)}
            )
            assert ack["ok"] is True, ack
            await asyncio.sleep(0.1)

    sender = asyncio.create_task(send_locations())
    try:
        await until(
            lambda: all(len(w.locations) >= 3 for w in watchers), within=10, what="locations before the drain"
        )

        sigterm_at = time.monotonic()
        os.killpg(a.proc.popen.pid, signal.SIGTERM)
        # Readiness goes false first, and new sockets are refused while the old ones drain.
        await until(lambda: http_json(a.url + "/readyz")[0] == 503, within=3, what="A /readyz 503")
        with pytest.raises(ConnectRefused) as refused:
            await stack.connect(a, uid("late"), "customer")
        assert refused.value.code == "CAPACITY"
        drain_metrics = scrape(a.url)
        assert drain_metrics.value("realtime_draining") == 1
        assert drain_metrics.value("realtime_connection_refusals_total", reason="DRAINING") == 1

        # The process leaves with 0 within the drain time.
        await until(lambda: a.proc.popen.poll() is not None, within=DRAIN_SECONDS + 2, what="A to exit")
        exited_after = time.monotonic() - sigterm_at
        assert a.proc.popen.returncode == 0, a.tail()
        assert exited_after <= DRAIN_SECONDS + 0.5, exited_after

        # Every watcher was told, reconnected through the balancer to B and keeps receiving.
        await until(
            lambda: all(w.subscribed.is_set() for w in watchers), within=10, what="watchers re-subscribed"
        )
        assert lb.routed[1] >= 4
        marks = [len(w.locations) for w in watchers]
        await until(
            lambda: all(len(w.locations) >= m + 3 for w, m in zip(watchers, marks, strict=True)),
            within=10,
            what="locations after the move",
        )
        for w in watchers:
            assert w.drain_notices == 1 and w.disconnects >= 1 and w.connects >= 2
    finally:
        stop_sending.set()
        with contextlib.suppress(Exception):
            await sender
        for w in watchers:
            await w.stop()
    await until(
        lambda: scrape(b.url).value("realtime_active_connections", namespace="/client") == 0,
        within=5,
        what="B to see the watchers leave",
    )
