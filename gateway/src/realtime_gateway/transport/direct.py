"""Engine.IO sockets that write WebSocket frames straight to the connection.

python-engineio gives every WebSocket a queue, a writer task that polls it with ``wait_for`` (a
new task per wait on Python 3.11), a task per received frame and a task per ping cycle. For a
gateway whose bulk traffic is one small frame to many sockets, that is most of the CPU per
delivery and a large part of the memory per idle connection. A socket that connected over
WebSocket directly (not upgraded from long-polling) and without permessage-deflate is switched
to this class: ``write_frame`` takes a ready frame without a task or a queue (per-socket order
is the order of the calls) and the frames a socket is given during one pass of the event loop go
out in one write at the end of the pass (``_Flusher``); it reads in the connection's own task
and is pinged from one scheduler per server. Everything else (polling, upgrades, compressed
sockets) keeps the stock path. The Engine.IO protocol (packets, ping/pong, close) stays
python-engineio's.

Backpressure: flushed frames go to the transport's buffer; a client that stops reading while its buffer
grows beyond ``max_pending_bytes`` is a slow consumer and its connection is aborted (the client
reconnects and recovers missed order events from the room history) instead of the gateway
buffering without bound.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import struct
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket

from realtime_gateway.tasks import Background, Suspended
from realtime_gateway.transport.inline import InlineQueue

log = logging.getLogger(__name__)

_TEXT: Final = 0x81  # FIN + text opcode
_BINARY: Final = 0x82  # FIN + binary opcode
_LEN2: Final = struct.Struct("!BBH").pack
_LEN8: Final = struct.Struct("!BBQ").pack


def _frame(first: int, payload: bytes) -> bytes:
    """One unmasked, uncompressed WebSocket frame (RFC 6455 §5.2), as a server sends it."""
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return _LEN2(first, 126, n) + payload
    return _LEN8(first, 127, n) + payload


def text_frame(payload: bytes) -> bytes:
    return _frame(_TEXT, payload)


def message_frame(encoded: bytes) -> bytes:
    """The frame of an Engine.IO MESSAGE packet carrying an encoded Socket.IO packet (UTF-8)."""
    return text_frame(b"4" + encoded)


def write_frames(
    sockets: Mapping[str, Any], participants: Iterable[tuple[str, str]], frame: bytes
) -> list[tuple[str, str]]:
    """``write_frame(frame)`` to the Engine.IO socket of each (sid, eio_sid). Returns the
    participants whose socket does not write directly (gone, not a DirectSocket, or not switched
    yet): their packets go through Engine.IO."""
    queued: list[tuple[str, str]] = []
    for participant in participants:
        sock = sockets.get(participant[1])
        if not (isinstance(sock, DirectSocket) and sock.write_frame(frame)):
            queued.append(participant)
    return queued


class DirectSocket(AsyncSocket):  # type: ignore[misc]
    """See the module docstring. Instances start as python-engineio's ``AsyncSocket`` and are
    switched to this class on the Engine.IO connect event (``adopt``), before their transport runs."""

    # python-engineio's own state (untyped there).
    queue: Any
    last_ping: float | None
    connected: bool
    closing: bool
    closed: bool
    # Class-level defaults: adopted instances were built by AsyncSocket.__init__.
    _writer: Any = None
    _transport: asyncio.Transport | None = None
    _ws_response: Any = None
    max_pending_bytes: int = 1 << 20
    on_slow_consumer: Callable[[], None] | None = None
    # Frames written during this pass of the event loop, sent by the server's _Flusher.
    _pending: list[bytes] | None = None
    # Whether event frames may be handled inline (inline.py): not where handlers need a task.
    inline_events: bool = True

    @classmethod
    def adopt(cls, sock: Any) -> None:
        if type(sock) is AsyncSocket:
            sock.__class__ = cls

    # --- writing ------------------------------------------------------------------------------
    def write_frame(self, frame: bytes) -> bool:
        """Write a ready frame; False when this socket is not (or no longer) writing directly,
        in which case the caller goes through ``send``."""
        transport = self._transport
        if transport is None:
            return False
        if self._writer._closing or transport.is_closing():
            return True  # the connection is going away: like the stock writer, drop
        pending = self._pending
        if pending is None:
            self._pending = [frame]
            _Flusher.of(self.server).add(self)
        else:
            pending.append(frame)
        return True

    def flush(self) -> None:
        """Send the frames written since the last flush, in one write."""
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        transport = self._transport
        if transport is None or self._writer._closing or transport.is_closing():
            return  # the connection is going away (or went): like the stock writer, drop
        transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        if transport.get_write_buffer_size() > self.max_pending_bytes:
            self._abort_slow()

    async def send(self, pkt: Any) -> None:
        if self._transport is None:
            await super().send(pkt)
            return
        if self.closed:
            return
        if self.last_ping and time.time() - self.last_ping > self.server.ping_timeout:
            await self.check_ping_timeout()  # closes the socket (stock behaviour)
            return
        data = pkt.encode()
        self.write_frame(text_frame(data.encode()) if isinstance(data, str) else _frame(_BINARY, data))

    def _abort_slow(self) -> None:
        transport = self._transport
        self._transport = None
        log.warning("slow consumer %s: more than %d bytes unsent, closing", self.sid, self.max_pending_bytes)
        if self.on_slow_consumer is not None:
            self.on_slow_consumer()
        if transport is not None:
            transport.abort()  # the reader sees the connection end and runs the disconnect

    # --- pings from one scheduler per server instead of a task per socket and cycle ----------------
    def schedule_ping(self) -> None:
        if self.last_ping:
            self.last_ping = None
            _Pinger.of(self.server).add(self)

    def ping_due(self) -> None:
        if self.closing or self.closed:
            return
        self.last_ping = time.time()
        if self._transport is not None:
            self.write_frame(text_frame(b"2"))
        else:
            self.server.start_background_task(self.send, eio_packet.Packet(eio_packet.PING))

    # --- closing ------------------------------------------------------------------------------
    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        if self._transport is None:
            await super().close(wait=wait, abort=abort, reason=reason)
            return
        # Nothing is queued, so there is nothing to wait for; the CLOSE packet is written directly.
        await super().close(wait=False, abort=abort, reason=reason)
        self.flush()  # the CLOSE packet and what preceded it go before the WebSocket close frame
        self._transport = None
        ws = self._ws_response
        if ws is not None and not ws.closed:
            # Not awaited here: close() may run in this socket's own reader, which must keep
            # reading for aiohttp to finish the closing handshake.
            _closing.spawn(ws.close())

    # --- the connection's task ----------------------------------------------------------------
    async def _websocket_handler(self, ws: Any) -> None:
        response = ws._sock
        writer = getattr(response, "_writer", None)
        if self.connected or writer is None or writer.compress:
            await super()._websocket_handler(ws)
            return
        self.connected = True
        self.upgraded = True
        self._ws_response = response
        self._writer = writer
        self._transport = writer.transport
        # What was queued before the connection existed (the OPEN packet) goes first; then the
        # queue (four deques, ~3 KB) is dropped for good.
        queued = self.queue
        self.queue = NO_QUEUE
        while not queued.empty():
            pkt = queued.get_nowait()
            if pkt is not None:
                await self.send(pkt)
        del queued  # this frame lives as long as the connection
        handle_message = self.server.handlers.get("message")
        max_size = self.server.max_http_buffer_size
        # Frames are read here rather than through the driver's wait(): one coroutine frame less
        # per idle connection and per message. ``data_of`` is the guarded driver's (limits.py).
        receive = response.receive
        data_of = getattr(ws, "data_of", _data_of)
        # Event frames that arrive while this reader waits are handled as they are parsed
        # (inline.py).
        queue = response._reader
        inline: InlineQueue | None = None
        if isinstance(queue, InlineQueue) and handle_message is not None and self.inline_events:
            inline = queue
            inline.sid, inline.on_message = self.sid, handle_message
        try:
            while True:
                if inline is not None:
                    inline.parked = True
                try:
                    msg = await receive()
                except Exception:
                    break
                if inline is not None:
                    inline.parked = False
                    if type(msg.data) is Suspended:  # an inline handler's rest, in frame order
                        try:
                            await msg.data
                        except Exception:
                            log.exception("message handler error")
                        continue
                try:
                    data = data_of(msg)
                except Exception:
                    break
                if data is None or len(data) > max_size:
                    break
                if isinstance(data, str) and data[:1] == "4" and handle_message is not None:
                    # MESSAGE, the bulk of the traffic: straight to Socket.IO, as Engine.IO's
                    # receive() would with async handlers off.
                    try:
                        await handle_message(self.sid, data[1:])
                    except Exception:
                        log.exception("message handler error")
                    continue
                try:
                    await self.receive(eio_packet.Packet(encoded_packet=data))
                except Exception:
                    log.debug("receive error on %s", self.sid, exc_info=True)
                    if self.closed:
                        break
        finally:
            if inline is not None:
                inline.on_message = None
                inline.parked = False
        self._transport = None
        if not response.closed:
            try:
                await response.close()
            except Exception:
                log.debug("close of %s failed", self.sid, exc_info=True)
        await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)


_closing = Background("websocket close")


# Sockets given frames since the last flush at which the flusher sends at once, mid-pass.
FLUSH_EARLY_AT: Final = 64


class _Flusher:
    """Sends the frames each socket was given during one pass of the event loop in one write,
    once the pass's callbacks ran (``call_soon``). uvloop writes to the socket at every
    ``transport.write``; under load a socket is often given several frames per pass (one
    location update per order it follows), and the system call per write was the largest
    single cost of a delivery. One flusher per server, so a closed event loop takes it along.

    Once ``FLUSH_EARLY_AT`` sockets wait, they are sent at once: a saturated pass reads every
    porter's backlog, and holding all its frames to its end made each wait for the whole pass.
    By then a socket rarely has more than one frame waiting, so sending early costs about the
    same writes (L at 20,000-25,000 updates/s: the same CPU per delivery, p50 and p99 about 40 %
    lower)."""

    def __init__(self) -> None:
        self._dirty: list[DirectSocket] = []

    @classmethod
    def of(cls, server: Any) -> _Flusher:
        flusher: _Flusher | None = getattr(server, "_direct_flusher", None)
        if flusher is None:
            flusher = server._direct_flusher = cls()
        return flusher

    def add(self, sock: DirectSocket) -> None:
        dirty = self._dirty
        dirty.append(sock)
        if len(dirty) == 1:
            asyncio.get_running_loop().call_soon(self._flush)
        elif len(dirty) >= FLUSH_EARLY_AT:
            self._flush()

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for sock in dirty:
            try:
                sock.flush()
            except Exception:  # one broken connection must not cost the others their frames
                log.debug("flush of %s failed", sock.sid, exc_info=True)


def _data_of(msg: Any) -> Any:
    """python-engineio's aiohttp driver's ``wait`` after the read: text or bytes, else closed."""
    if not isinstance(msg.data, bytes | str):
        raise OSError()
    return msg.data


class _Pinger:
    """Sends each socket's next PING ``ping_interval`` after its last PONG (Engine.IO's rule),
    from one task per server and a heap of due times: an idle socket costs a heap entry, not a
    task or timer handle."""

    def __init__(self, server: Any) -> None:
        self._server = server
        # Weak references: a socket that closes before its ping is due is not kept alive for it.
        self._due: list[tuple[float, int, weakref.ref[DirectSocket]]] = []
        self._seq = itertools.count()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, server: Any) -> _Pinger:
        pinger: _Pinger | None = getattr(server, "_direct_pinger", None)
        if pinger is None:
            pinger = server._direct_pinger = cls(server)
        return pinger

    def add(self, sock: DirectSocket) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self._server.ping_interval
        heapq.heappush(self._due, (due, next(self._seq), weakref.ref(sock)))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="engineio-pings")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = self._due
        while due:
            wait = due[0][0] - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            sock = heapq.heappop(due)[2]()
            if sock is None:
                continue
            try:
                sock.ping_due()
            except Exception:
                log.debug("ping of %s failed", sock.sid, exc_info=True)


class _NoQueue:
    """Stands in for the Engine.IO queue of a socket that writes directly. Only a socket whose
    connection already ended can reach it (a send racing the close): like the stock writer after
    the end, it drops the packet."""

    async def put(self, item: Any) -> None:
        return None

    def put_nowait(self, item: Any) -> None:
        return None

    async def get(self) -> Any:
        raise TimeoutError  # Engine.IO's poll() reads this as "nothing to send"

    def get_nowait(self) -> Any:
        raise asyncio.QueueEmpty

    def empty(self) -> bool:
        return True

    def qsize(self) -> int:
        return 0

    def task_done(self) -> None:
        return None

    async def join(self) -> None:
        return None


NO_QUEUE: Final = _NoQueue()
