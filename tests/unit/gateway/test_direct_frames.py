"""The direct writer's WebSocket frames are byte-identical to aiohttp's own writer's."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp._websocket.writer import WebSocketWriter
from aiohttp.http_websocket import WSMsgType

from realtime_gateway.transport.direct import message_frame, text_frame

pytestmark = pytest.mark.unit


class _Capture(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def write(self, data: Any) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False


def _aiohttp_frame(payload: bytes) -> bytes:
    transport = _Capture()
    writer = WebSocketWriter(protocol=None, transport=transport)  # type: ignore[arg-type]
    writer._write_websocket_frame(payload, WSMsgType.TEXT, 0)
    return bytes(transport.data)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frame_matches_aiohttp(size: int) -> None:
    payload = b"x" * size
    assert text_frame(payload) == _aiohttp_frame(payload)


def test_message_frame_is_an_engineio_message() -> None:
    encoded = '2/client,["porter:location",{"orderId":"o-ü"}]'
    assert message_frame(encoded.encode()) == _aiohttp_frame(("4" + encoded).encode())
