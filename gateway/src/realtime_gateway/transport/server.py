"""Construction of the Socket.IO server and the JSON module it uses."""

from __future__ import annotations

import json
from typing import Any

import orjson
import socketio

from realtime_contract import NAMESPACE_ROLES
from realtime_gateway.fanout.manager import RoomFanoutManager
from realtime_gateway.settings import Settings


class FastJson:
    """orjson for python-socketio/engineio, falling back to the stdlib for what orjson refuses
    (integers beyond 64 bits, NaN/Infinity literals): a client's odd payload must not break decoding."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        try:
            return orjson.dumps(obj).decode()
        except TypeError:
            return json.dumps(obj, separators=(",", ":"))

    @staticmethod
    def loads(data: str | bytes, **_: Any) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return json.loads(data)


def create_server(settings: Settings, manager: RoomFanoutManager) -> socketio.AsyncServer:
    return socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        namespaces=list(NAMESPACE_ROLES),
        json=FastJson,
        transports=list(settings.transports),
        # Credentials travel in the handshake auth or Authorization header, never in cookies,
        # so any origin may connect.
        cors_allowed_origins="*",
        logger=False,
        engineio_logger=False,
        ping_interval=25,
        ping_timeout=20,
        # Bigger frames close the WebSocket with 1009 (counted, see limits.py).
        max_http_buffer_size=settings.max_payload_bytes,
    )
