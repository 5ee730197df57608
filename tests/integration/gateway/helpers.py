"""Payload builders and a raw Socket.IO client shared by the gateway integration tests."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from typing import Any
from urllib.parse import SplitResult

import orjson


def location(**overrides: Any) -> dict[str, Any]:
    return {
        "lat": 52.52,
        "lng": 13.405,
        "heading": 90.0,
        "speed": 5.0,
        "accuracy": 8.0,
        "timestamp": int(time.time() * 1000),
        **overrides,
    }


# --- a Socket.IO client written frame by frame, for what a library client will not do ------------
def masked_text_frame(payload: bytes) -> bytes:
    """A masked client text frame (clients must mask, RFC 6455 §5.3)."""
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    header = bytes((0x81, 0x80 | n)) if n < 126 else bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    return header + key + body


async def read_text_frame(reader: asyncio.StreamReader) -> str:
    first, second = await reader.readexactly(2)
    n = second & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    assert first & 0x0F == 0x1, f"expected a text frame, got opcode {first & 0x0F}"
    return (await reader.readexactly(n)).decode()


async def raw_connect(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, url: SplitResult, namespace: str, token: str
) -> None:
    """The WebSocket upgrade, Engine.IO's open packet and Socket.IO's CONNECT to ``namespace``."""
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    status = await reader.readuntil(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 101"), status
    assert (await read_text_frame(reader)).startswith("0")
    writer.write(masked_text_frame(f"40{namespace},".encode() + orjson.dumps({"token": token})))
    assert (await read_text_frame(reader)).startswith(f"40{namespace},")
