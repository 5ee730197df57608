"""Store interfaces. Handlers and the fan-out talk to these, never to Redis directly."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class OrderAccess:
    """Who may see an order, as learned from ``order.created`` / ``order.assigned``."""

    order_id: str
    customer_id: str | None
    porter_id: str | None


@dataclass(frozen=True, slots=True)
class SocketRecord:
    sid: str
    user_id: str
    role: str
    namespace: str
    instance_id: str


@dataclass(frozen=True, slots=True)
class ReconnectGrant:
    """What a reconnect token restores: the identity and the socket's order subscriptions."""

    user_id: str
    role: str
    namespace: str
    expires_at: float
    orders: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class LiveSocket:
    """A connected socket as the TTL keepalive sees it."""

    sid: str
    user_id: str
    orders: frozenset[str]
    reconnect_token: str
    reconnect_ttl: int  # already bounded by the credential's expiry


class OrderAccessStore(Protocol):
    async def record_created(self, order_id: str, customer_id: str) -> None: ...
    async def record_assigned(self, order_id: str, porter_id: str) -> None: ...
    async def get(self, order_id: str) -> OrderAccess | None: ...
    async def expire(self, order_id: str) -> None: ...
    async def orders_of_porter(self, porter_id: str) -> set[str]: ...


class SessionStore(Protocol):
    """socket ↔ user (one user, many sockets)."""

    async def register(self, record: SocketRecord) -> None: ...
    async def unregister(self, sid: str, user_id: str) -> None: ...
    async def sockets_of_user(self, user_id: str) -> set[str]: ...
    async def get_socket(self, sid: str) -> SocketRecord | None: ...
    async def refresh(self, sockets: Iterable[LiveSocket]) -> None:
        """Renew the TTLs of live sockets' keys (socket, user, subscriptions, reconnect token)."""
        ...


class SubscriptionStore(Protocol):
    """order → subscribed sockets, plus the reconnect token's copy of the socket's orders."""

    async def add(self, order_id: str, sid: str, reconnect_token: str) -> None: ...
    async def remove(self, order_id: str, sid: str, reconnect_token: str) -> None: ...
    async def drop_socket(self, sid: str, order_ids: Iterable[str]) -> None: ...
    async def subscribers(self, order_id: str) -> set[str]: ...


class ReconnectTokenStore(Protocol):
    async def issue(self, grant: ReconnectGrant, ttl: int) -> str: ...
    async def consume(self, token: str, namespace: str) -> ReconnectGrant | None: ...


class LocationStore(Protocol):
    async def put(self, porter_id: str, location: dict[str, Any]) -> set[str]:
        """Store the last position; return the orders currently assigned to the porter."""
        ...

    async def get(self, porter_id: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True, slots=True)
class Stores:
    orders: OrderAccessStore
    sessions: SessionStore
    subscriptions: SubscriptionStore
    reconnect: ReconnectTokenStore
    locations: LocationStore
