"""The emitter with recovery and the offline queue in its path.

- ``to_order``: non-transient events get the room's next offset and its epoch (history store);
  with Redis the history script also publishes, so offsets reach every instance in order.
- ``to_user`` for ``notification`` / ``job:offer``: kept in the user's offline queue when the
  user has no live socket anywhere, delivered on their next connect.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final, Protocol

import orjson

from realtime_gateway.fanout.emitter import Emitter, order_room
from realtime_gateway.fanout.manager import RoomFanoutManager
from realtime_gateway.observability.tracing import current_traceparent
from realtime_gateway.recovery.history import (
    BUS_PREFIX,
    TRANSIENT_EVENTS,
    Appended,
    HistoryStore,
    RedisHistory,
)

QUEUED_EVENTS: Final = frozenset({"notification", "job:offer"})


class OfflineSink(Protocol):
    async def enqueue_if_offline(self, user_id: str, event: str, data: Any) -> bool: ...


class ReliableEmitter(Emitter):
    def __init__(self, manager: RoomFanoutManager) -> None:
        super().__init__(manager)
        self.manager = manager
        self.history: HistoryStore | None = None
        self.offline: OfflineSink | None = None
        # True when the history store publishes to the bus itself (Redis); False: emit here.
        self.history_publishes = False

    async def to_order(self, order_id: str, event: str, data: Any, *, skip_sid: str | None = None) -> None:
        if self.history is None or event in TRANSIENT_EVENTS or not isinstance(data, dict):
            await super().to_order(order_id, event, data, skip_sid=skip_sid)
            return
        if self.history_publishes:
            await self.start_to_order(order_id, event, data, skip_sid=skip_sid)
            return
        _, stamped, appended = await self.history.append(order_id, event, data)
        if appended:
            await self.manager.emit_room(order_room(order_id), event, stamped, skip_sid=skip_sid)

    def start_to_order(
        self, order_id: str, event: str, data: dict[str, Any], *, skip_sid: str | None = None
    ) -> asyncio.Future[Appended]:
        """:meth:`to_order` of a non-transient event when the history publishes (Redis), up to the
        round trip: emits started in one loop iteration go out in one history script call, in
        call order, without a task each. The future is done when the event was published, or
        found already in the history (then it is not published again)."""
        history = self.history
        if not (self.history_publishes and isinstance(history, RedisHistory)) or event in TRANSIENT_EVENTS:
            raise RuntimeError("start_to_order needs a publishing history and a non-transient event")
        envelope = {
            "r": order_room(order_id),
            "e": event,
            "n": None,
            "s": skip_sid,
            "t": time.time(),
            "tp": current_traceparent(),  # the delivering instances' emit spans join this trace
        }
        head = orjson.dumps(envelope)[:-1] + b',"d":'
        return history.start_append(order_id, event, data, BUS_PREFIX + head + b"\0}")

    async def to_user(self, user_id: str, event: str, data: Any, *, skip_sid: str | None = None) -> None:
        offline = self.offline
        if (
            offline is not None
            and event in QUEUED_EVENTS
            and await offline.enqueue_if_offline(user_id, event, data)
        ):
            return
        await super().to_user(user_id, event, data, skip_sid=skip_sid)
