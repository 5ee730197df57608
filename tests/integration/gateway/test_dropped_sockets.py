"""A socket whose peer vanishes without a close frame (a phone losing its network) leaves nothing
for the cyclic collector: its response, request, transport and buffers go with their last
reference (``transport/server.py``, ``forget_failure``)."""

from __future__ import annotations

import asyncio
import gc
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from tests.integration.gateway.helpers import raw_connect
from tests.support.deploy import eventually
from tests.support.gateway_fixtures import EmbeddedFactory, mint_token
from tests.support.sio import connect

pytestmark = pytest.mark.integration


def websockets(objects: list[object]) -> int:
    return sum(isinstance(o, web.WebSocketResponse) for o in objects)


async def test_sockets_that_vanish_or_close_leave_no_reference_cycle(
    embedded_factory: EmbeddedFactory, no_automatic_collection: None
) -> None:
    embedded = await embedded_factory()
    conns = embedded.gateway.handlers.conns
    url = urlsplit(embedded.url)
    for i in range(5):
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        await raw_connect(reader, writer, url, "/client", mint_token(f"c-gone-{i}", "customer"))
        assert conns
        writer.transport.abort()  # no close frame: the connection just ends
    async with await connect(embedded.url, "/client", mint_token("c-closes", "customer")):
        pass

    in_cycles = 0

    async def handlers_done() -> bool:
        nonlocal in_cycles
        gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection would free, kept here to be counted
        gc.collect()
        cyclic = websockets(gc.garbage)
        gc.set_debug(0)
        gc.garbage.clear()
        in_cycles = max(in_cycles, cyclic)
        # Engine.IO's service task may still hold the last socket it checked, until its next pass.
        return not conns and websockets(gc.get_objects()) - cyclic <= 1

    await eventually(handlers_done, within=10, what="the closed sockets' handlers to finish")
    assert in_cycles == 0, f"{in_cycles} WebSocket responses were left in reference cycles"
