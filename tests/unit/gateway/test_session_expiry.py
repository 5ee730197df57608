"""auth/expiry.py: which sockets are ended, when, and what the one timer does in between."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from realtime_gateway.auth.claims import Claims
from realtime_gateway.auth.expiry import EXPIRED_EVENT, SessionExpiry
from realtime_gateway.transport.handlers import Conn
from tests.support.deploy import until

pytestmark = pytest.mark.unit


class Server:
    """Records what the expiry asks of the Socket.IO server."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    async def emit(self, event: str, data: Any, *, to: str, namespace: str) -> None:
        assert data == EXPIRED_EVENT
        self.calls.append((event, to, namespace))

    async def disconnect(self, sid: str, *, namespace: str) -> None:
        self.calls.append(("disconnect", sid, namespace))


def conn(sid: str, in_s: float, namespace: str = "/client") -> Conn:
    return Conn(sid, namespace, Claims("u-" + sid, "customer", time.time() + in_s), "token")


async def test_sockets_end_in_deadline_order_and_departed_ones_are_skipped() -> None:
    server = Server()
    expiry = SessionExpiry(server, leeway=0.0)
    expiry.on_connect(conn("late", 0.4))
    expiry.on_connect(conn("gone", 0.1))
    expiry.on_connect(conn("early", 0.2, "/porter"))  # earlier than the armed 0.4 s: re-armed
    expiry.on_disconnect(conn("gone", 0.1))
    await until(lambda: len(server.calls) == 4, within=5.0, what="both live sockets ended")
    assert server.calls == [
        ("error", "early", "/porter"),
        ("disconnect", "early", "/porter"),
        ("error", "late", "/client"),
        ("disconnect", "late", "/client"),
    ]
    assert expiry.expired == 2
    await expiry.stop()


async def test_leeway_defers_the_end_and_stop_cancels_the_timer() -> None:
    server = Server()
    expiry = SessionExpiry(server, leeway=30.0)
    expiry.on_connect(conn("s1", -1.0))  # expired a second ago, still inside the leeway
    await asyncio.sleep(0.2)
    assert server.calls == []
    await expiry.stop()
    assert expiry._timer is None


async def test_a_sid_connected_again_keeps_only_its_newest_deadline() -> None:
    server = Server()
    expiry = SessionExpiry(server, leeway=0.0)
    expiry.on_connect(conn("s1", 0.05))
    expiry.on_connect(conn("s1", 3600))  # the same sid with a new token: the old entry is stale
    other = conn("s2", 0.15)
    expiry.on_connect(other)
    await until(lambda: len(server.calls) == 2, within=5.0, what="s2 ended")
    assert [c[1] for c in server.calls] == ["s2", "s2"]
    assert set(expiry._due) == {"s1"}
    await expiry.stop()


async def test_the_heap_of_departed_sockets_is_compacted() -> None:
    expiry = SessionExpiry(Server(), leeway=0.0)
    for i in range(5000):
        c = conn(f"s{i}", 3600)
        expiry.on_connect(c)
        expiry.on_disconnect(c)
    # Stale entries never outgrow twice the live ones plus a constant.
    assert len(expiry._heap) <= 1024 + 1
    await expiry.stop()
