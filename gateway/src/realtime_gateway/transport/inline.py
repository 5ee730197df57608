"""Received event frames handled as aiohttp parses them, not one pass of the event loop later.

aiohttp parses WebSocket frames in the protocol's ``data_received`` and queues each message for
the task awaiting ``receive()``: a future, a wake-up on the next pass of the event loop and a
task step per frame. Under load a pass is long (it reads every busy socket before it runs the
woken tasks), so every received location update waited one whole pass before its handler ran.

``InlineWebSocketResponse`` gives the connection a queue that hands a Socket.IO EVENT frame to
the socket's handler at once when the socket's reader is idle (waiting in ``receive()`` with
nothing queued, reads not paused): the handler starts inside ``data_received``. If it finishes
without waiting, that is all; if it waits (a Redis round trip), the rest of it is queued as a
continuation (``tasks.Suspended``) that the reader awaits before any later frame, so a connection's
frames are still handled one at a time, in order. Like a task, each inline handler runs in a
copy of the context, before and after a wait, so a context variable set before a wait is reset
in the context it was set in. Every other frame (close, ping, pong, Engine.IO control packets,
anything while the reader is busy) takes aiohttp's queue as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final

from aiohttp import WSMessage, WSMsgType, web
from aiohttp._websocket.reader import WebSocketDataQueue
from aiohttp.helpers import DEFAULT_CHUNK_SIZE
from aiohttp.http_websocket import WebSocketReader

from realtime_gateway.tasks import start_inline

log = logging.getLogger(__name__)

_TEXT: Final = WSMsgType.TEXT

Handler = Callable[[str, str], Coroutine[Any, Any, None]]


class InlineQueue(WebSocketDataQueue):  # type: ignore[misc]
    """aiohttp's message queue, which starts ``on_message(sid, packet)`` for an EVENT frame
    instead of queueing it while ``parked`` (set by the reader around its ``receive()``) and
    nothing is queued. ``on_message`` is python-socketio's Engine.IO message handler."""

    __slots__ = ("on_message", "parked", "sid")

    def __init__(self, protocol: Any, limit: int, *, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(protocol, limit, loop=loop)
        self.on_message: Handler | None = None
        self.sid = ""
        self.parked = False

    def feed_data(self, data: Any, size: int) -> None:
        on_message = self.on_message
        if (
            on_message is not None
            and self.parked
            and not self._buffer
            and data[0] is _TEXT
            and data[1][:2] == "42"
            # Not while reads are paused (the queue went over its limit): then the parser stalls,
            # and the reader's own receive() resumes it, parsing inside the reader; a frame
            # taken inline there would overtake the one the reader is about to return.
            and not self._protocol._reading_paused
        ):
            try:
                rest = start_inline(on_message(self.sid, data[1][1:]))
            except Exception:  # as in the reader: logged, the connection carries on
                log.exception("message handler error")
                return
            if rest is not None:
                # The rest goes to the reader ahead of later frames.
                super().feed_data(WSMessage(_TEXT, rest, ""), 0)
            return
        super().feed_data(data, size)


class InlineWebSocketResponse(web.WebSocketResponse):
    """A WebSocket response whose message queue is an ``InlineQueue``."""

    def _post_start(self, request: Any, protocol: str | None, writer: Any) -> None:
        # aiohttp 3.14's own ``_post_start`` with the queue class replaced; where an aiohttp's
        # attributes or reader differ from these, its own (and stock reading).
        loop = self._loop
        assert loop is not None  # set by prepare()
        try:
            queue = InlineQueue(request._protocol, DEFAULT_CHUNK_SIZE, loop=loop)
            parser = WebSocketReader(
                queue, self._max_msg_size, compress=bool(self._compress), decode_text=self._decode_text
            )
            heartbeat_cb = None if self._heartbeat is None else self._on_data_received
        except (AttributeError, TypeError):
            super()._post_start(request, protocol, writer)
            return
        self._ws_protocol = protocol
        self._writer = writer
        self._reset_heartbeat()
        self._reader = queue
        self._parser = parser
        request.protocol.set_parser(parser, data_received_cb=heartbeat_cb)
        request.protocol.keep_alive(False)
