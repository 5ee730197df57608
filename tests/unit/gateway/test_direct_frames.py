"""The direct writer's WebSocket frames are byte-identical to aiohttp's own writer's."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp._websocket.writer import WebSocketWriter
from aiohttp.http_websocket import WSMsgType

from realtime_gateway.transport.direct import FLUSH_EARLY_AT, _Flusher, message_frame, text_frame

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


class _Socket:
    """What the flusher asks of a socket: ``flush``."""

    def __init__(self, flushed: list[int], n: int) -> None:
        self.sid = str(n)
        self._flushed = flushed
        self._n = n

    def flush(self) -> None:
        self._flushed.append(self._n)


async def test_frames_wait_for_the_end_of_the_pass_until_enough_sockets_wait() -> None:
    """Sockets given frames in one pass are flushed after it, each once, in the order they were
    given them; once ``FLUSH_EARLY_AT`` wait, they are flushed at once, and the rest after the pass."""
    flushed: list[int] = []
    flusher = _Flusher()
    for n in range(FLUSH_EARLY_AT - 1):
        flusher.add(_Socket(flushed, n))  # type: ignore[arg-type]
    assert flushed == []
    flusher.add(_Socket(flushed, FLUSH_EARLY_AT - 1))  # type: ignore[arg-type]
    assert flushed == list(range(FLUSH_EARLY_AT))
    flusher.add(_Socket(flushed, FLUSH_EARLY_AT))  # type: ignore[arg-type]
    assert len(flushed) == FLUSH_EARLY_AT
    await asyncio.sleep(0)
    assert flushed == list(range(FLUSH_EARLY_AT + 1))
