"""permessage-deflate on the WebSocket transport: off unless RTG_WS_COMPRESSION turns it on."""

from __future__ import annotations

import aiohttp
import pytest

from realtime_contract import Env
from tests.support.gateway_fixtures import EmbeddedFactory

pytestmark = pytest.mark.integration


async def _negotiated_deflate(url: str) -> tuple[int, str]:
    """The compression the server agreed to for a client that offers it, and the open packet."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket", compress=15) as ws,
    ):
        opened = await ws.receive_str(timeout=5)
        return ws.compress, opened


@pytest.mark.parametrize(("setting", "expected"), [(None, 0), ("false", 0), ("true", 15)])
async def test_websocket_deflate_follows_the_setting(
    embedded_factory: EmbeddedFactory, setting: str | None, expected: int
) -> None:
    gw = await embedded_factory(**{Env.WS_COMPRESSION: setting})
    compress, opened = await _negotiated_deflate(gw.url)
    assert opened.startswith("0{")  # an Engine.IO open packet: the socket works either way
    assert compress == expected
