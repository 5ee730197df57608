"""Construction of the Socket.IO server and the JSON module it uses."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Final

import orjson
import socketio
from aiohttp.web import WebSocketResponse
from socketio.packet import Packet

from realtime_contract import NAMESPACE_ROLES
from realtime_gateway.fanout.manager import RoomFanoutManager
from realtime_gateway.settings import Settings
from realtime_gateway.transport.direct import DirectSocket
from realtime_gateway.transport.inline import InlineWebSocketResponse


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


log = logging.getLogger(__name__)

# Handled in the socket's own reader task instead of a new task per event: the GPS stream is the
# bulk of incoming traffic and its handler is short (rate limit, store, emit). Per-socket order
# is kept; a slow one delays only its own socket. Everything else (chat waits for the broker's
# acknowledgement) keeps python-socketio's task per event.
INLINE_EVENTS: Final = frozenset({"location:update"})


class GatewayServer(socketio.AsyncServer):  # type: ignore[misc]
    # Unsent bytes after which a directly written WebSocket is dropped as a slow consumer.
    max_pending_bytes: int = 1 << 20
    on_slow_consumer: Callable[[], None] | None = None
    # Whether event frames may be handled as they are parsed (transport/inline.py).
    inline_events: bool = True

    async def _handle_eio_connect(self, eio_sid: str, environ: Any) -> Any:
        # The first point where the Engine.IO socket exists but its transport has not started.
        sock = self.eio.sockets.get(eio_sid)
        if sock is not None:
            DirectSocket.adopt(sock)
            sock.max_pending_bytes = self.max_pending_bytes
            sock.on_slow_consumer = self.on_slow_consumer
            if not self.inline_events:
                sock.inline_events = False
        return await super()._handle_eio_connect(eio_sid, environ)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        parsed = _parse_event(data) if type(data) is str and data[:1] == "2" else None
        if parsed is None or eio_sid in self._binary_packet:
            await super()._handle_eio_message(eio_sid, data)
            return
        namespace, id, payload = parsed
        event = payload[0] if type(payload) is list and payload else None
        if id is None and type(event) is str and event in INLINE_EVENTS:
            # The GPS stream: _handle_event's inline branch without its own coroutine.
            manager = self.manager
            sid = manager.sid_from_eio_sid(eio_sid, namespace)
            if not manager.is_connected(sid, namespace):
                return
            handler = self.handlers.get("*", {}).get(event)
            if handler is not None:
                try:
                    await handler(namespace, sid, *payload[1:])
                except Exception:  # as in a handler task: logged, the socket's reader carries on
                    log.exception("%s handler failed", event)
                return
        await self._handle_event(eio_sid, namespace, id, payload)

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: Any, data: Any) -> None:
        event = data[0] if isinstance(data, list) and data else None
        if not (isinstance(event, str) and event in INLINE_EVENTS):
            await super()._handle_event(eio_sid, namespace, id, data)
            return
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if not self.manager.is_connected(sid, namespace):
            return
        try:
            handler = self.handlers.get("*", {}).get(event) if id is None else None
            if handler is not None:
                # What _trigger_event would resolve to (handlers are registered for every
                # namespace), without its lookups; no ack is owed.
                await handler(namespace, sid, *data[1:])
            else:
                await self._handle_event_internal(self, sid, eio_sid, data, namespace, id)
        except Exception:  # as in a handler task: logged, the socket's reader carries on
            log.exception("%s handler failed", event)


def _parse_event(data: str) -> tuple[str, int | None, Any] | None:
    """(namespace, ack id, payload) of a Socket.IO EVENT packet in its usual shape
    (``2[/ns,][id][...]``), as python-socketio's ``Packet.decode`` reads it; None for any
    other shape, which then takes python-socketio's own path (and its errors)."""
    start = 1
    namespace = "/"
    if data[1:2] == "/":
        comma = data.find(",", 1)
        if comma < 0 or "?" in data[1:comma]:
            return None
        namespace, start = data[1:comma], comma + 1
    end = start
    while end < len(data) and data[end].isdigit():
        end += 1
    if data[end : end + 1] != "[" or end - start > 100:
        return None
    try:
        payload = orjson.loads(data[end:])
    except orjson.JSONDecodeError:
        return None
    return namespace, int(data[start:end]) if end > start else None, payload


_SCALARS: tuple[type, ...] = (str, int, float, bool, type(None))


class GatewayPacket(Packet):  # type: ignore[misc]
    """python-socketio's packet with a cheaper binary scan: the stock one walks every payload
    recursively, building a list per level, on each emit (~15 % of fan-out CPU once the rest is
    lean). Same answer, iterative, stops at the first bytes."""

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        stack = [data]
        while stack:
            item = stack.pop()
            if isinstance(item, _SCALARS):
                continue
            if isinstance(item, bytes | bytearray):
                return True
            if isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, dict):
                stack.extend(item.values())
        return False


def forget_failure(ws: WebSocketResponse) -> None:
    """Drop the tracebacks of the error a finished WebSocket keeps (``ws.exception()``).

    A peer that vanishes without a close frame (a phone losing its network) ends aiohttp's
    ``receive()`` in ``EofStream``, and the close frame it then tries to write fails; aiohttp keeps
    that error, whose traceback holds ``close()``'s frame, which holds the response: a reference
    cycle of about 60 objects per socket (request, transport, parser, buffers) left for the cyclic
    collector. Nothing reads the error once the socket's handler has returned."""
    exc: BaseException | None = ws.exception()
    seen = 0
    while exc is not None and seen < 8:  # the chain of errors raised while handling another
        exc.__traceback__ = None
        exc, seen = exc.__context__ or exc.__cause__, seen + 1


def _set_websocket_compression(sio: socketio.AsyncServer, compress: bool) -> None:
    """Engine.IO's aiohttp driver always negotiates permessage-deflate (aiohttp's default); its
    per-socket zlib state dominates the memory of an idle connection. Subclasses of the driver
    (limits.py's guard) build on this one."""
    eio: Any = sio.eio
    base = eio._async["websocket"]
    if base is None:
        return

    class WebSocket(base):  # type: ignore[misc, valid-type]
        async def __call__(self, environ: Any) -> Any:
            # The driver's own __call__ with ``compress`` passed through.
            # Uncompressed connections are read by DirectSocket, which handles event frames inline.
            response = WebSocketResponse if compress else InlineWebSocketResponse
            self._sock = response(max_msg_size=self.server.max_http_buffer_size, compress=compress)
            await self._sock.prepare(environ["aiohttp.request"])
            self.environ = environ
            await self.handler(self)
            forget_failure(self._sock)
            return self._sock

    eio._async = {**eio._async, "websocket": WebSocket}


def create_server(settings: Settings, manager: RoomFanoutManager) -> GatewayServer:
    sio = GatewayServer(
        async_mode="aiohttp",
        client_manager=manager,
        serializer=GatewayPacket,
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
    _set_websocket_compression(sio, settings.ws_compression)
    sio.max_pending_bytes = settings.ws_max_pending_bytes
    return sio
