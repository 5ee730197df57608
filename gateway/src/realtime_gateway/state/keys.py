"""Redis key names and TTLs (contract §3 "Redis keys").

The part in braces is a Redis Cluster hash tag: keys that one pipeline or Lua script touches
together share it (``reconnect:token:{t}`` / ``reconnect:subs:{t}``, ``order:access:{o}`` /
``order:subscription:{o}``, ``porter:location:{p}`` / ``porter:orders:{p}``).
"""

from __future__ import annotations

from typing import Final

SESSION_TTL: Final = 24 * 3600
SUBSCRIPTION_TTL: Final = 24 * 3600
LOCATION_TTL: Final = 3600
ORDER_ACCESS_TTL: Final = 7 * 24 * 3600


def socket_user(sid: str) -> str:
    return f"socket:user:{{{sid}}}"


def user_socket(user_id: str) -> str:
    return f"user:socket:{{{user_id}}}"


def order_subscription(order_id: str) -> str:
    return f"order:subscription:{{{order_id}}}"


def order_access(order_id: str) -> str:
    return f"order:access:{{{order_id}}}"


def porter_orders(porter_id: str) -> str:
    return f"porter:orders:{{{porter_id}}}"


def porter_location(porter_id: str) -> str:
    return f"porter:location:{{{porter_id}}}"


def reconnect_token(token: str) -> str:
    return f"reconnect:token:{{{token}}}"


def reconnect_subs(token: str) -> str:
    return f"reconnect:subs:{{{token}}}"


def job_offer(offer_id: str) -> str:
    return f"job:offer:{{{offer_id}}}"


def room_channel(room: str) -> str:
    """The sharded pub/sub channel carrying one Socket.IO room's messages between instances."""
    return f"rtg:room:{room}"
