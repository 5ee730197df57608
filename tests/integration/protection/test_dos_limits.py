"""DoS limits: each produces its documented refusal and moves realtime_connection_refusals_total."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest

from realtime_contract import Env
from tests.integration.protection.conftest import Stack, scrape, uid
from tests.support.gateway_fixtures import mint_token
from tests.support.sio import ConnectRefused

pytestmark = pytest.mark.integration


async def test_connection_cap_refuses_with_capacity(stack: Stack) -> None:
    gw = stack.start("dos-cap", **{Env.MAX_CONNECTIONS: "2"})
    await stack.connect(gw, uid("c"), "customer")
    second = await stack.connect(gw, uid("c"), "customer")
    with pytest.raises(ConnectRefused) as refused:
        await stack.connect(gw, uid("c"), "customer")
    assert refused.value.code == "CAPACITY"
    assert scrape(gw.url).value("realtime_connection_refusals_total", reason="CAPACITY") == 1
    # A slot frees up when a socket leaves.
    await second.disconnect()
    deadline = time.monotonic() + 5
    while scrape(gw.url).value("realtime_active_connections") > 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await stack.connect(gw, uid("c"), "customer")
    m = scrape(gw.url)
    assert m.value("realtime_connection_refusals_total", reason="CAPACITY") == 1
    # Protection refusals are not authentication errors.
    assert m.value("realtime_authentication_errors_total") == 0


async def test_connect_rate_per_client_ip_behind_a_trusted_proxy(stack: Stack) -> None:
    gw = stack.start(
        "dos-ip",
        **{Env.CONNECT_RATE_LIMIT: "3/60s", Env.TRUSTED_PROXY_HEADER: "X-Forwarded-For"},
    )
    # The client's own claim (left) is ignored; the proxy-appended address (right) counts.
    hdr = {"X-Forwarded-For": "6.6.6.6, 203.0.113.9"}
    for i in range(3):
        c = await stack.connect(
            gw, uid("c"), "customer", headers={"X-Forwarded-For": f"10.9.9.{i}, 203.0.113.9"}
        )
        await c.disconnect()
    with pytest.raises(ConnectRefused) as refused:
        await stack.connect(gw, uid("c"), "customer", headers=hdr)
    assert refused.value.code == "RATE_LIMITED"
    assert "retry in" in str(refused.value.data.get("message"))
    # Another client address has its own budget.
    await stack.connect(gw, uid("c"), "customer", headers={"X-Forwarded-For": "203.0.113.10"})
    assert scrape(gw.url).value("realtime_connection_refusals_total", reason="RATE_LIMITED") == 1


async def test_oversize_payload_closes_the_connection(stack: Stack) -> None:
    gw = stack.start("dos-size", **{Env.MAX_PAYLOAD_BYTES: "4096"})
    c = await stack.connect(gw, uid("p"), "porter")
    small = await c.call("order:unsubscribe", {"orderId": "x" * 100})
    assert small["ok"] is True
    await c.emit("order:unsubscribe", {"orderId": "x" * 10_000})
    await c.next("disconnect", timeout=5)
    assert not c.connected
    deadline = time.monotonic() + 5
    while scrape(gw.url).value("realtime_connection_refusals_total", reason="PAYLOAD_TOO_LARGE") < 1:
        assert time.monotonic() < deadline, "oversize frame not counted"
        await asyncio.sleep(0.05)

    # Long-polling: a POST body over the limit is refused, the session ends, and it is counted.
    base = f"{gw.url}/socket.io/?EIO=4&transport=polling"
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.get(base) as resp:
            assert resp.status == 200
            opened = orjson.loads((await resp.text())[1:])
        assert opened["maxPayload"] == 4096
        session = f"{base}&sid={opened['sid']}"

        async def long_poll() -> str:
            # A polling client always has a GET waiting; the server's CLOSE packet arrives on it.
            async with http.get(session) as resp:
                return await resp.text()

        async def oversize_post() -> int:
            await asyncio.sleep(0.2)
            async with http.post(session, data=b"4" + b"x" * 10_000) as resp:
                return resp.status

        polled, status = await asyncio.gather(long_poll(), oversize_post())
    assert status == 400
    assert "1" in polled.split("\x1e")  # the Engine.IO CLOSE packet
    assert scrape(gw.url).value("realtime_connection_refusals_total", reason="PAYLOAD_TOO_LARGE") == 2


async def test_too_many_subscriptions_per_socket(stack: Stack) -> None:
    gw = stack.start("dos-subs", **{Env.MAX_SUBSCRIPTIONS: "2"})
    customer = uid("c")
    orders = [await stack.order(customer) for _ in range(3)]
    c = await stack.connect(gw, customer, "customer")
    assert (await c.call("order:subscribe", {"orderId": orders[0]}))["ok"] is True
    assert (await c.call("order:subscribe", {"orderId": orders[1]}))["ok"] is True
    # Re-subscribing to a held order is not a new subscription.
    assert (await c.call("order:subscribe", {"orderId": orders[1]}))["ok"] is True
    third = await c.call("order:subscribe", {"orderId": orders[2]})
    assert third["ok"] is False and third["error"]["code"] == "LIMIT_EXCEEDED"
    error = await c.next("error")
    assert error["code"] == "LIMIT_EXCEEDED" and error["event"] == "order:subscribe"
    # Dropping one makes room again.
    assert (await c.call("order:unsubscribe", {"orderId": orders[0]}))["ok"] is True
    assert (await c.call("order:subscribe", {"orderId": orders[2]}))["ok"] is True
    assert scrape(gw.url).value("realtime_subscription_refusals_total") == 1


async def test_handshake_timeout_closes_idle_engineio_sessions(stack: Stack) -> None:
    gw = stack.start("dos-hs", **{Env.HANDSHAKE_TIMEOUT_SECONDS: "1"})
    ws_url = gw.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        opened = await ws.receive(timeout=5)
        assert opened.type == aiohttp.WSMsgType.TEXT and opened.data.startswith("0")
        started = time.monotonic()
        # Never send the namespace CONNECT: the server must give up on us.
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                break
            if msg.type == aiohttp.WSMsgType.TEXT and msg.data == "1":  # engine.io CLOSE packet
                break
        waited = time.monotonic() - started
    assert 0.5 < waited < 4, waited
    assert scrape(gw.url).value("realtime_connection_refusals_total", reason="HANDSHAKE_TIMEOUT") == 1
    # A well-behaved client connects as usual.
    c = await stack.connect(gw, uid("c"), "customer")
    await asyncio.sleep(0)
    assert c.connected
    token = mint_token(uid("c"), "customer")
    assert token
