"""The one fan-out API the rest of the gateway (handlers, Kafka dispatch, HTTP event API) calls.

Each call reaches the sockets in the right namespaces on every instance.
"""

from __future__ import annotations

from typing import Any

from realtime_gateway.fanout.manager import RoomFanoutManager

ADMIN_NAMESPACE = "/admin"
ORDER_STATUS = "order:status"
# An order's last status (``order.completed`` / ``order.cancelled``) carries ``"final": true``; an
# instance that delivered it takes its sockets out of the order's room (``GatewayHandlers.end_order``).
FINAL_STATUS_FIELD = "final"
_ORDER_ROOM_PREFIX = "order:"


def order_room(order_id: str) -> str:
    return f"{_ORDER_ROOM_PREFIX}{order_id}"


def order_of_room(room: str) -> str | None:
    return room[len(_ORDER_ROOM_PREFIX) :] if room.startswith(_ORDER_ROOM_PREFIX) else None


def user_room(user_id: str) -> str:
    return f"user:{user_id}"


ADMINS_ROOM = "admins"


class Emitter:
    def __init__(self, manager: RoomFanoutManager) -> None:
        self._manager = manager

    async def to_order(self, order_id: str, event: str, data: Any, *, skip_sid: str | None = None) -> None:
        """Everyone subscribed to the order: its customer, its porter, watching admins."""
        await self._manager.emit_room(order_room(order_id), event, data, skip_sid=skip_sid)

    async def to_user(self, user_id: str, event: str, data: Any, *, skip_sid: str | None = None) -> None:
        """Every socket (device) of one user, on any instance (``skip_sid``: not the one that acted)."""
        await self._manager.emit_room(user_room(user_id), event, data, skip_sid=skip_sid)

    async def to_admins(self, event: str, data: Any) -> None:
        await self._manager.emit_room(ADMINS_ROOM, event, data, namespaces=(ADMIN_NAMESPACE,))
