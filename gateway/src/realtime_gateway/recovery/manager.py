"""The fan-out manager with a per-socket hold: room events for a socket that is still connecting
are buffered until its recovery replay (and offline queue) went out, so a client sees missed
events in order before live ones, never a live event first.

A socket is held from ``pre_connect`` (before the connect handler joins its rooms) until
``connect`` finished running the ``on_connected`` hook; then the buffer is flushed, dropping
events the replay already delivered (same epoch, offset not above the replayed one).

Per order room, the instance also keeps the position (epoch, offset) it last delivered from the
bus. A bus message that repeats an offset is dropped; one that skips offsets (messages lost while
the pub/sub connection was down, e.g. across a Redis restart) first pulls the missing events from
the history, so the sockets of this instance see every offset once and in order. ``catch_up``
does the same proactively once Redis is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from realtime_gateway.fanout import message as bus_message
from realtime_gateway.fanout.emitter import order_of_room
from realtime_gateway.fanout.manager import RoomFanoutManager
from realtime_gateway.observability.tracing import remote_parent
from realtime_gateway.recovery.history import HistoryStore, Position

FILL_ATTEMPTS = 4

log = logging.getLogger(__name__)

# (sid, namespace) -> {room: last position replayed to that socket}
OnConnected = Callable[[str, str], Awaitable[dict[str, Position]]]


class HoldingManager(RoomFanoutManager):
    def __init__(self, bus: Any = None) -> None:
        super().__init__(bus)
        self._held: dict[str, list[tuple[str, str, str, Any]]] = {}
        self.on_connected: OnConnected | None = None
        # Set with Redis: the history that fills gaps in a room's bus messages.
        self.history: HistoryStore | None = None
        self._positions: dict[str, Position] = {}
        self._sequencing = asyncio.Lock()
        self.gaps_filled = 0
        self.duplicates_dropped = 0

    async def pre_connect(self, eio_sid: str, namespace: str) -> Any:
        sid = await super().pre_connect(eio_sid, namespace)
        if sid is not None:
            self._held[sid] = []
        return sid

    async def connect(self, sid: str, namespace: str) -> Any:
        result = await super().connect(sid, namespace)  # runs the after-connect (session) callback
        replayed: dict[str, Position] = {}
        try:
            if self.on_connected is not None and sid in self._held:
                replayed = await self.on_connected(sid, namespace)
        except Exception:
            log.exception("recovery of socket %s failed", sid)
        finally:
            await self._release(sid, namespace, replayed)
        return result

    async def disconnect(self, sid: str, namespace: str, **kwargs: Any) -> Any:
        self._held.pop(sid, None)
        return await super().disconnect(sid, namespace, **kwargs)

    def holding(self, sid: str) -> bool:
        return sid in self._held

    async def _release(self, sid: str, namespace: str, replayed: dict[str, Position]) -> None:
        buffer = self._held.get(sid)
        # Events keep arriving into the same list while we await each emit; drain until empty,
        # then stop holding with no await in between.
        while buffer:
            ns, room, event, data = buffer.pop(0)
            last = replayed.get(room)
            if last is not None and isinstance(data, dict):
                offset, epoch = data.get("offset"), data.get("epoch")
                if epoch == last.epoch and isinstance(offset, int) and offset <= last.offset:
                    continue
            try:
                await self.emit(event, data, ns, room=sid)
            except Exception:
                log.warning("flushing held event to %s failed", sid, exc_info=True)
        self._held.pop(sid, None)

    async def _deliver(
        self,
        room: str,
        event: str,
        data: Any,
        namespaces: Iterable[str] | None,
        skip_sid: Any,
        sent_at: float | None = None,
        body: bytes | None = None,
    ) -> None:
        if self._held:
            spaces = list(self.rooms) if namespaces is None else list(namespaces)
            held: list[str] = []
            for ns in spaces:
                for sid in list(self.rooms.get(ns, {}).get(room) or ()):
                    buffer = self._held.get(sid)
                    if buffer is not None and sid != skip_sid:
                        data = bus_message.decoded(data, body)  # the buffer keeps data, not packets
                        buffer.append((ns, room, event, data))
                        held.append(sid)
            if held:
                skip = [skip_sid, *held] if skip_sid is not None else held
                # python-socketio's emit takes a list of sids to skip; the base class only passes it on.
                await super()._deliver(room, event, data, spaces, skip, sent_at, body)  # type: ignore[arg-type]
                return
        await super()._deliver(room, event, data, namespaces, skip_sid, sent_at, body)

    def _header_extras(self, data: Any) -> dict[str, Any]:
        # A stamped event's position travels in the header: receivers sequence it undecoded.
        position = _position(data)
        return {} if position is None else {"p": [position.epoch, position.offset]}

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            "gapsFilled": self.gaps_filled,
            "duplicatesDropped": self.duplicates_dropped,
        }

    # --- per-room sequencing of bus messages ---------------------------------------------------
    async def _sync(self, room: str | None) -> None:
        await super()._sync(room)
        if isinstance(room, str) and room not in self._subscribed:
            # A later re-subscription starts afresh; never "fill" events nobody here was owed.
            self._positions.pop(room, None)

    async def _on_bus_message(self, payload: bytes) -> None:
        if payload.startswith(self._prefix):
            return
        header, data, body = bus_message.read(payload)
        room = header["r"]
        position = _position(data) if body is None else _header_position(header)
        if position is None or self.history is None or order_of_room(room) is None:
            with remote_parent(header.get("tp")):
                await self._deliver(
                    room, header["e"], data, header.get("n"), header.get("s"), header.get("t"), body
                )
            return
        async with self._sequencing:
            if not self.has_local(room):
                self._positions.pop(room, None)
                return
            last = self._positions.get(room)
            if last is not None and last.epoch == position.epoch:
                if position.offset <= last.offset:
                    self.duplicates_dropped += 1
                    return
                if position.offset > last.offset + 1:
                    last = await self._fill(room, last)
                    if position.offset <= last.offset:
                        return
            self._positions[room] = position
            with remote_parent(header.get("tp")):
                await self._deliver(
                    room, header["e"], data, header.get("n"), header.get("s"), header.get("t"), body
                )

    async def _fill(self, room: str, last: Position) -> Position:
        """Deliver what the history holds after ``last``; return the new last position."""
        order_id = order_of_room(room)
        assert self.history is not None and order_id is not None  # only order rooms are sequenced
        for attempt in range(FILL_ATTEMPTS):
            try:
                result = await self.history.recover(order_id, last)
                break
            except Exception:
                # Right after a Redis restart the pool still holds dead connections; if every
                # attempt fails, the next message or ``catch_up`` fills the gap.
                if attempt == FILL_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)
        if not result.recovered:
            log.warning("gap in %s after offset %d cannot be filled from the history", room, last.offset)
            return last
        for entry in result.events:
            await self._deliver(room, entry.event, entry.data, None, None)
            self.gaps_filled += 1
            last = Position(last.epoch, entry.offset)
        self._positions[room] = last
        return last

    async def catch_up(self) -> None:
        """After Redis came back: deliver what each local order room missed meanwhile."""
        if self.history is None:
            return
        async with self._sequencing:
            for room, last in list(self._positions.items()):
                if self.has_local(room):
                    await self._fill(room, last)


def _header_position(header: dict[str, Any]) -> Position | None:
    match header.get("p"):
        case [str(epoch), int(offset)]:
            return Position(epoch, offset)
    return None


def _position(data: Any) -> Position | None:
    if isinstance(data, dict):
        offset, epoch = data.get("offset"), data.get("epoch")
        if isinstance(offset, int) and isinstance(epoch, str):
            return Position(epoch, offset)
    return None
