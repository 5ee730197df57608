"""WebSocket sockets written directly (transport/direct.py): Engine.IO pings from the timer, the
ping timeout, and the slow-consumer cut-off, seen from real clients of an embedded gateway."""

from __future__ import annotations

import asyncio
import contextvars
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest

from realtime_contract import Env
from tests.integration.gateway.helpers import masked_text_frame, raw_connect, read_text_frame
from tests.support.gateway_fixtures import EmbeddedFactory, mint_token
from tests.support.sio import connect

pytestmark = pytest.mark.integration


def _ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"


async def _engineio_pings(gateway_url: str, answer: bool, window_s: float) -> tuple[int, bool]:
    """Open a raw Engine.IO WebSocket; count server PINGs for ``window_s`` (answering them or
    not) and say whether the server closed the connection meanwhile."""
    pings = 0
    async with aiohttp.ClientSession() as http, http.ws_connect(_ws_url(gateway_url)) as ws:
        opened = await ws.receive(timeout=5)
        assert opened.type == aiohttp.WSMsgType.TEXT and opened.data.startswith("0"), opened
        deadline = time.monotonic() + window_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await ws.receive(timeout=left)
            except TimeoutError:
                break
            if msg.type != aiohttp.WSMsgType.TEXT:
                return pings, True
            if msg.data == "1":  # Engine.IO CLOSE
                return pings, True
            if msg.data == "2":
                pings += 1
                if answer:
                    await ws.send_str("3")
        return pings, False


async def test_pings_keep_an_answering_socket_and_close_a_silent_one(
    embedded_factory: EmbeddedFactory,
) -> None:
    embedded = await embedded_factory()
    eio = embedded.gateway.sio.eio
    eio.ping_interval, eio.ping_timeout = 0.2, 0.6

    pings, closed = await _engineio_pings(embedded.url, answer=True, window_s=2.0)
    assert pings >= 4 and not closed, (pings, closed)

    pings, closed = await _engineio_pings(embedded.url, answer=False, window_s=6.0)
    assert pings == 1 and closed, (pings, closed)


# --- slow consumer --------------------------------------------------------------------------
async def _stalled_subscriber(gateway_url: str, token: str, order_id: str) -> tuple[Any, socket.socket]:
    """A Socket.IO client on /client, subscribed to ``order_id``, that then never reads again: a
    tiny receive buffer and a 1 KiB stream limit make the server's writes back up quickly."""
    parts = urlsplit(gateway_url)
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    await asyncio.get_running_loop().sock_connect(raw, (parts.hostname, parts.port))
    reader, writer = await asyncio.open_connection(sock=raw, limit=1024)
    await raw_connect(reader, writer, parts, "/client", token)
    writer.write(masked_text_frame(b"42/client,1" + orjson.dumps(["order:subscribe", {"orderId": order_id}])))
    while True:  # the session event comes first, then the ack
        frame = await read_text_frame(reader)
        if frame.startswith("43/client,1"):
            assert orjson.loads(frame[len("43/client,1") :])[0]["ok"] is True, frame
            return writer, raw


async def test_a_client_that_stops_reading_is_cut_off_and_others_get_everything(
    embedded_factory: EmbeddedFactory,
) -> None:
    embedded = await embedded_factory(**{Env.WS_MAX_PENDING_BYTES: 65536})
    gateway = embedded.gateway
    order_id = "o-slow"
    await gateway.stores.orders.record_created(order_id, "c-slow")
    slow_writer, raw = await _stalled_subscriber(embedded.url, mint_token("c-slow", "customer"), order_id)
    slow_sids = set(gateway.handlers.conns)
    assert len(slow_sids) == 1
    async with await connect(embedded.url, "/client", mint_token("c-slow", "customer")) as healthy:
        assert (await healthy.call("order:subscribe", {"orderId": order_id}))["ok"] is True
        padding = "x" * 8000
        sent = 0
        # 8 KB events until the stalled socket is dropped (the kernel buffers take a few MB first).
        deadline = time.monotonic() + 30
        while slow_sids & set(gateway.handlers.conns):
            assert time.monotonic() < deadline, "the stalled client was never disconnected"
            event = {"orderId": order_id, "n": sent, "p": padding}
            await gateway.emitter.to_order(order_id, "order:status", event)
            sent += 1
            if sent % 50 == 0:
                await asyncio.sleep(0)  # let the healthy client read
        received = [(await healthy.next("order:status", timeout=10))["n"] for _ in range(sent)]
        assert received == list(range(sent))
    slow_writer.close()
    raw.close()
    async with aiohttp.ClientSession() as http, http.get(embedded.url + "/metrics") as resp:
        assert "realtime_slow_consumer_disconnects_total 1.0" in await resp.text()


# --- event frames handled as they are parsed (transport/inline.py) ------------------------------
_handling: contextvars.ContextVar[int | None] = contextvars.ContextVar("test_handling", default=None)


async def test_inline_event_frames_keep_their_order_and_context_across_waits(
    embedded_factory: EmbeddedFactory,
) -> None:
    """Location frames that reach an idle reader start their handler as aiohttp parses them; a
    handler that waits hands the rest to the socket's reader, and later frames wait for it."""
    embedded = await embedded_factory()
    seen: list[tuple[str, int]] = []
    inline_waits: list[int] = []
    total = 60
    done = asyncio.Event()

    async def handler(namespace: str, sid: str, data: dict[str, int]) -> None:
        n = data["n"]
        token = _handling.set(n)  # reset below: raises in a context other than this one
        seen.append(("start", n))
        if n % 3 == 0:
            if asyncio.current_task() is None:  # started inside data_received
                inline_waits.append(n)
            await asyncio.sleep(0.002)
        assert _handling.get() == n
        _handling.reset(token)
        seen.append(("end", n))
        if n == total - 1:
            done.set()

    embedded.gateway.sio.on("location:update", handler, namespace="*")
    async with await connect(embedded.url, "/porter", mint_token("p-inline", "porter")) as porter:
        for n in range(total):
            await porter.emit("location:update", {"n": n})
            if n % 10 == 9:
                await asyncio.sleep(0.01)  # let the reader go idle again
        await asyncio.wait_for(done.wait(), 10)
    assert seen == [(step, n) for n in range(total) for step in ("start", "end")]
    assert inline_waits, "no handler that waits was started inline"
