"""A python-socketio client manager whose rooms span instances through per-room channels.

The stock pub/sub managers publish every emit on one channel that every instance reads. Here a
room has its own sharded channel (``rtg:room:<room>``); an instance subscribes to it when its
first local socket (in any namespace) joins the room and unsubscribes when its last one leaves,
so an instance with no member of a room never receives that room's messages.

Scope: emits to named rooms cross instances; emits to a single sid, to a whole namespace
(room=None) and with callbacks stay local (the gateway addresses users and orders through rooms).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from realtime_gateway.fanout import message as bus_message
from realtime_gateway.fanout.bus import Bus
from realtime_gateway.observability.tracing import current_traceparent, remote_parent
from realtime_gateway.state.keys import room_channel
from realtime_gateway.transport.direct import message_frame, text_frame, write_frames

log = logging.getLogger(__name__)

AfterConnect = Callable[[], Awaitable[None]]


def _encode_event(packet_class: Any, namespace: str, data: list[Any]) -> tuple[bytes, list[bytes]]:
    """The Socket.IO EVENT packet for ``data`` as python-socketio's ``Packet.encode`` writes it,
    in UTF-8 (the frame's encoding), and its binary attachments. orjson refuses what needs the
    packet class's care (bytes, integers beyond 64 bits, non-string keys): those take its path."""
    body = _encode_body(data)
    if body is None:
        encoded = packet_class(sio_packet.EVENT, namespace=namespace, data=data).encode()
        if isinstance(encoded, list):
            return encoded[0].encode(), list(encoded[1:])
        return encoded.encode(), []
    return _with_namespace(namespace, body), []


def _encode_body(data: list[Any]) -> bytes | None:
    """The JSON array of an EVENT packet, the same in every namespace; None when orjson refuses."""
    try:
        return orjson.dumps(data)
    except TypeError:
        return None


def _with_namespace(namespace: str, body: bytes) -> bytes:
    if namespace == "/":
        return b"2" + body
    return b"2" + namespace.encode() + b"," + body


_MESSAGE_PREFIXES: dict[str, bytes] = {}


def _message_frame(namespace: str, body: bytes) -> bytes:
    """``message_frame(_with_namespace(namespace, body))`` with the namespace's prefix made once."""
    prefix = _MESSAGE_PREFIXES.get(namespace)
    if prefix is None:
        prefix = b"4" + _with_namespace(namespace, b"")
        if len(_MESSAGE_PREFIXES) < 64:  # namespaces are the server's few
            _MESSAGE_PREFIXES[namespace] = prefix
    return text_frame(prefix + body)


def _event_args(event: str, data: Any) -> list[Any]:
    """``[event, *args]`` as python-socketio's emit builds it from ``data``."""
    if isinstance(data, tuple):
        return [event, *data]
    return [event] if data is None else [event, data]


class _KeyedLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> Any:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class RoomFanoutManager(socketio.AsyncManager):  # type: ignore[misc]
    def __init__(self, bus: Bus | None = None) -> None:
        super().__init__()
        self.bus = bus
        self.host_id = uuid.uuid4().hex
        self._prefix = self.host_id.encode() + b"|"
        self._subscribed: set[str] = set()
        self._locks = _KeyedLocks()
        self._after_connect: dict[str, AfterConnect] = {}
        self.published = 0
        # Told after each local emit: (namespace, event, recipients, time.time() of the emit_room
        # call or None); the metrics use it for messages sent and fan-out latency.
        self.on_delivered: Callable[[str, str, int, float | None], None] | None = None
        # By event name: awaited with (room, data) after a room message was delivered here, on
        # whichever instance delivers it (an order's final status ends its room on every instance).
        self.after_delivery: dict[str, Callable[[str, Any], Awaitable[None]]] = {}
        if bus is not None:
            bus.set_handler(self._on_bus_message)

    # --- counters for /readyz and tests --------------------------------------------------
    @property
    def received(self) -> int:
        return self.bus.received if self.bus is not None else 0

    def stats(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "published": self.published,
            "channels": len(self._subscribed),
            "rooms": sorted(self._subscribed)[:100],
        }

    # --- connection lifecycle ------------------------------------------------------------
    def after_connect(self, sid: str, callback: AfterConnect) -> None:
        """Run ``callback`` once the CONNECT packet went out (emitting earlier confuses clients)."""
        self._after_connect[sid] = callback

    async def connect(self, sid: str, namespace: str) -> Any:
        result = await super().connect(sid, namespace)
        callback = self._after_connect.pop(sid, None)
        if callback is not None:
            try:
                await callback()
            except Exception:
                log.exception("after-connect callback failed")
        return result

    async def disconnect(self, sid: str, namespace: str, **kwargs: Any) -> Any:
        self._after_connect.pop(sid, None)
        rooms = [r for r in self.get_rooms(sid, namespace) if r != sid]
        result = self.basic_disconnect(sid, namespace, **kwargs)
        for room in rooms:
            await self._sync(room)
        return result

    # --- membership -> channel subscriptions ------------------------------------------------
    async def enter_room(self, sid: str, namespace: str, room: str, eio_sid: str | None = None) -> None:
        self.basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if room != sid:
            await self._sync(room)

    async def leave_room(self, sid: str, namespace: str, room: str) -> None:
        self.basic_leave_room(sid, namespace, room)
        if room != sid:
            await self._sync(room)

    async def close_room(self, room: str, namespace: str) -> None:
        self.basic_close_room(room, namespace)
        await self._sync(room)

    def has_local(self, room: str) -> bool:
        return any(room in rooms for rooms in self.rooms.values())

    async def _sync(self, room: str | None) -> None:
        if self.bus is None or not isinstance(room, str):
            return
        async with self._locks.hold(room):
            want, have = self.has_local(room), room in self._subscribed
            if want and not have:
                await self.bus.subscribe(room_channel(room))
                self._subscribed.add(room)
            elif have and not want:
                self._subscribed.discard(room)
                await self.bus.unsubscribe(room_channel(room))

    # --- emitting ------------------------------------------------------------------------
    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        room = to or room
        if (
            self.bus is None
            or kwargs.get("ignore_queue")
            or callback is not None
            or not isinstance(room, str)
            or self.is_sid_room(namespace, room)
        ):
            if callback is None:
                await self._emit_local(event, data, namespace, room, skip_sid)
            else:
                await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback)
            self._delivered(namespace, event, room, skip_sid, None)
            return
        await self.emit_room(room, event, data, namespaces=(namespace,), skip_sid=skip_sid)

    async def emit_room(
        self,
        room: str,
        event: str,
        data: Any,
        namespaces: Sequence[str] | None = None,
        skip_sid: str | None = None,
    ) -> None:
        """Emit to ``room`` in ``namespaces`` (all when None) on this and every other instance."""
        sent_at = time.time()
        # With a bus, encoded once: for this instance's sockets and, as it is, for the others'.
        body = _encode_body(_event_args(event, data)) if self.bus is not None else None
        await self._deliver(room, event, data, namespaces, skip_sid, sent_at, body)
        if self.bus is not None:
            header = {
                "r": room,
                "e": event,
                "n": namespaces,
                "s": skip_sid,
                "t": sent_at,
                # The publishing flow's trace context: the other instances' emits join its trace.
                "tp": current_traceparent(),
                **self._header_extras(data),
            }
            if body is None:
                # The bus message is JSON: what orjson refuses (bytes, ...) reached this
                # instance's sockets only.
                raise TypeError(f"{event!r} data is not JSON-serialisable and cannot reach other instances")
            self.published += 1
            await self.bus.publish(room_channel(room), bus_message.encode(self._prefix, header, body))

    def _header_extras(self, data: Any) -> dict[str, Any]:
        """More bus message header fields for ``data`` (``fanout/message.py``)."""
        return {}

    async def _deliver(
        self,
        room: str,
        event: str,
        data: Any,
        namespaces: Iterable[str] | None,
        skip_sid: str | None,
        sent_at: float | None = None,
        body: bytes | None = None,
    ) -> None:
        """Deliver to this instance's members of ``room``; ``body``, when given, is the EVENT
        packet's JSON array already encoded (``data`` may then be ``UNDECODED``)."""
        rooms = self.rooms
        for namespace in list(rooms) if namespaces is None else namespaces:
            ns_rooms = rooms.get(namespace)
            if ns_rooms is None or room not in ns_rooms:
                continue
            if body is None:  # once per room message, not per namespace
                body = _encode_body(_event_args(event, data)) or b""
            if not body:
                await self._emit_local(event, data, namespace, room, skip_sid)
                self._delivered(namespace, event, room, skip_sid, sent_at)
                sent_at = None
                continue
            # The GPS stream's path: _emit_local and _delivered on one snapshot of the members.
            participants = self._participants(namespace, room, skip_sid)
            # A list of held sockets (recovery/manager.py) still counts as sent.
            recipients = len(ns_rooms[room]) if isinstance(skip_sid, list) else len(participants)
            queued = self._write_frame(participants, _message_frame(namespace, body))
            if queued:
                await self._queue(queued, _with_namespace(namespace, body), [])
            if self.on_delivered is not None:
                self.on_delivered(namespace, event, recipients, sent_at)
            sent_at = None  # one latency observation per room message on this instance
        if self.after_delivery:
            after = self.after_delivery.get(event)
            if after is not None:
                await after(room, bus_message.decoded(data, body))

    async def _emit_local(self, event: str, data: Any, namespace: str, room: Any, skip_sid: Any) -> None:
        """python-socketio's ``AsyncManager.emit`` without a callback, minus its task per recipient:
        the packet is encoded once, its WebSocket frame built once, and written to each recipient
        that writes directly (``transport/direct.py``); others get the Engine.IO packet queued."""
        if namespace not in self.rooms:
            return
        text, attachments = _encode_event(self.server.packet_class, namespace, _event_args(event, data))
        if attachments:
            queued = [(sid, eio_sid) for sid, eio_sid in self._participants(namespace, room, skip_sid)]
        else:
            queued = self._write_direct(namespace, room, skip_sid, text)
        if queued:
            await self._queue(queued, text, attachments)

    def _participants(self, namespace: str, room: Any, skip_sid: Any) -> list[tuple[str, str]]:
        """(sid, eio_sid) of the room's members in ``namespace``, a snapshot, minus ``skip_sid``
        (a sid or a list of them)."""
        if isinstance(room, str) or room is None:
            members = self.rooms[namespace].get(room)
            participants = list(members._fwdm.items()) if members is not None else []
        else:
            participants = list(self.get_participants(namespace, room))
        if skip_sid is None:
            return participants
        skip = skip_sid if isinstance(skip_sid, list) else (skip_sid,)
        return [p for p in participants if p[0] not in skip]

    def _write_direct(self, namespace: str, room: Any, skip_sid: Any, text: bytes) -> list[tuple[str, str]]:
        """Write the EVENT packet ``text`` as one frame to every member that writes directly;
        returns the members that do not (their packets go through Engine.IO)."""
        return self._write_frame(self._participants(namespace, room, skip_sid), message_frame(text))

    def _write_frame(self, participants: list[tuple[str, str]], frame: bytes) -> list[tuple[str, str]]:
        return write_frames(self.server.eio.sockets, participants, frame)

    async def _queue(self, recipients: list[tuple[str, str]], text: bytes, attachments: list[bytes]) -> None:
        pkts = [eio_packet.Packet(eio_packet.MESSAGE, text.decode())]
        pkts += [eio_packet.Packet(eio_packet.MESSAGE, a) for a in attachments]
        send = self.server._send_eio_packet
        for sid, eio_sid in recipients:
            try:
                for p in pkts:
                    await send(eio_sid, p)
            except Exception:  # one broken socket must not cost the others their message
                log.debug("emit to %s failed", sid, exc_info=True)

    def _delivered(self, namespace: str, event: str, room: Any, skip_sid: Any, sent_at: float | None) -> None:
        if self.on_delivered is None:
            return
        members = self.rooms.get(namespace, {}).get(room)
        if members is None:
            recipients = 0
        else:
            recipients = len(members)
            if isinstance(skip_sid, str) and skip_sid in members:
                recipients -= 1
        self.on_delivered(namespace, event, recipients, sent_at)

    async def _on_bus_message(self, payload: bytes) -> None:
        # An instance also hears its own publications on rooms it has members in; it already
        # delivered those locally, so skip them before decoding.
        if payload.startswith(self._prefix):
            return
        header, data, body = bus_message.read(payload)
        with remote_parent(header.get("tp")):
            await self._deliver(
                header["r"], header["e"], data, header.get("n"), header.get("s"), header.get("t"), body
            )
