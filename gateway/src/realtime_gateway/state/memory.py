"""In-process stores for the embedded mode (one instance, no Redis). Same semantics, incl. TTLs
where a client can observe them (reconnect tokens, locations)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from typing import Any

from realtime_gateway.state import keys
from realtime_gateway.state.base import LiveSocket, OrderAccess, ReconnectGrant, SocketRecord, Stores


class MemoryOrderAccessStore:
    def __init__(self) -> None:
        self._access: dict[str, OrderAccess] = {}
        self._porter_orders: dict[str, set[str]] = {}

    async def record_created(self, order_id: str, customer_id: str) -> None:
        old = self._access.get(order_id)
        self._access[order_id] = OrderAccess(order_id, customer_id, old.porter_id if old else None)

    async def record_assigned(self, order_id: str, porter_id: str) -> None:
        old = self._access.get(order_id)
        if old and old.porter_id and old.porter_id != porter_id:
            self._porter_orders.get(old.porter_id, set()).discard(order_id)
        self._access[order_id] = OrderAccess(order_id, old.customer_id if old else None, porter_id)
        self._porter_orders.setdefault(porter_id, set()).add(order_id)

    async def get(self, order_id: str) -> OrderAccess | None:
        return self._access.get(order_id)

    async def expire(self, order_id: str) -> None:
        old = self._access.pop(order_id, None)
        if old and old.porter_id:
            orders = self._porter_orders.get(old.porter_id)
            if orders is not None:
                orders.discard(order_id)
                if not orders:
                    del self._porter_orders[old.porter_id]

    async def orders_of_porter(self, porter_id: str) -> set[str]:
        return self.porter_orders_now(porter_id)

    def porter_orders_now(self, porter_id: str) -> set[str]:
        """``orders_of_porter`` without a coroutine (a copy: callers may keep it)."""
        return set(self._porter_orders.get(porter_id, ()))


class MemorySessionStore:
    def __init__(self, tokens: MemoryReconnectTokenStore) -> None:
        self._tokens = tokens
        self._sockets: dict[str, SocketRecord] = {}
        # user -> their socket id, or a set of them once they have several devices: most users
        # have one socket, and an empty set alone is ~200 bytes per connection.
        self._users: dict[str, str | set[str]] = {}

    async def register(self, record: SocketRecord) -> None:
        self._sockets[record.sid] = record
        held = self._users.get(record.user_id)
        if held is None or held == record.sid:
            self._users[record.user_id] = record.sid
        elif isinstance(held, str):
            self._users[record.user_id] = {held, record.sid}
        else:
            held.add(record.sid)

    async def unregister(self, sid: str, user_id: str) -> None:
        self._sockets.pop(sid, None)
        held = self._users.get(user_id)
        if held is None:
            return
        if isinstance(held, str):
            if held == sid:
                del self._users[user_id]
            return
        held.discard(sid)
        if len(held) == 1:
            self._users[user_id] = next(iter(held))
        elif not held:
            del self._users[user_id]

    async def sockets_of_user(self, user_id: str) -> set[str]:
        held = self._users.get(user_id)
        if held is None:
            return set()
        return {held} if isinstance(held, str) else set(held)

    async def refresh(self, sockets: Iterable[LiveSocket]) -> None:
        for live in sockets:
            self._tokens.extend(live.reconnect_token, live.reconnect_ttl)

    async def get_socket(self, sid: str) -> SocketRecord | None:
        return self._sockets.get(sid)


class MemorySubscriptionStore:
    def __init__(self, tokens: MemoryReconnectTokenStore) -> None:
        self._orders: dict[str, set[str]] = {}
        self._tokens = tokens

    async def add(self, order_id: str, sid: str, reconnect_token: str) -> None:
        self._orders.setdefault(order_id, set()).add(sid)
        self._tokens.add_order(reconnect_token, order_id)

    async def remove(self, order_id: str, sid: str, reconnect_token: str) -> None:
        self._discard(order_id, sid)
        self._tokens.remove_order(reconnect_token, order_id)

    async def drop_socket(self, sid: str, order_ids: Iterable[str]) -> None:
        for order_id in order_ids:
            self._discard(order_id, sid)

    async def subscribers(self, order_id: str) -> set[str]:
        return set(self._orders.get(order_id, ()))

    def _discard(self, order_id: str, sid: str) -> None:
        sids = self._orders.get(order_id)
        if sids is not None:
            sids.discard(sid)
            if not sids:
                del self._orders[order_id]


# Expired tokens are swept once the map has grown to twice what the last sweep left (and at least
# this many): each sweep is O(n) but happens after n new tokens, so an issue stays O(1) amortised.
# Sweeping on every issue made opening n sockets O(n²) once more than this many tokens existed.
SWEEP_MIN_TOKENS = 1024


class MemoryReconnectTokenStore:
    def __init__(self) -> None:
        # token -> (deadline, grant, orders); orders stays None until the socket subscribes (an
        # empty set per idle connection is ~200 bytes).
        self._tokens: dict[str, tuple[float, ReconnectGrant, set[str] | None]] = {}
        self._sweep_at = SWEEP_MIN_TOKENS

    def __len__(self) -> int:
        return len(self._tokens)

    async def issue(self, grant: ReconnectGrant, ttl: int) -> str:
        if len(self._tokens) >= self._sweep_at:
            self.sweep()
        token = secrets.token_urlsafe(32)
        deadline = min(time.time() + ttl, grant.expires_at)
        self._tokens[token] = (deadline, grant, set(grant.orders) if grant.orders else None)
        return token

    async def consume(self, token: str, namespace: str) -> ReconnectGrant | None:
        entry = self._tokens.get(token)
        if entry is None or entry[0] < time.time():
            self._tokens.pop(token, None)
            return None
        if entry[1].namespace != namespace:
            return entry[1]
        del self._tokens[token]
        _, grant, orders = entry
        return ReconnectGrant(
            grant.user_id, grant.role, grant.namespace, grant.expires_at, frozenset(orders or ())
        )

    def extend(self, token: str, ttl: int) -> None:
        entry = self._tokens.get(token)
        if entry is not None and entry[0] >= time.time():  # an expired token stays expired
            deadline = min(time.time() + ttl, entry[1].expires_at)
            self._tokens[token] = (max(entry[0], deadline), entry[1], entry[2])

    def add_order(self, token: str, order_id: str) -> None:
        entry = self._tokens.get(token)
        if entry is None:
            return
        if entry[2] is None:
            self._tokens[token] = (entry[0], entry[1], {order_id})
        else:
            entry[2].add(order_id)

    def remove_order(self, token: str, order_id: str) -> None:
        entry = self._tokens.get(token)
        if entry is not None and entry[2] is not None:
            entry[2].discard(order_id)

    def sweep(self) -> int:
        """Drop expired tokens; returns how many. Expired ones are refused on use even unswept."""
        now = time.time()
        expired = [t for t, e in self._tokens.items() if e[0] < now]
        for token in expired:
            del self._tokens[token]
        self._sweep_at = max(SWEEP_MIN_TOKENS, 2 * len(self._tokens))
        return len(expired)


class MemoryLocationStore:
    def __init__(self, orders: MemoryOrderAccessStore, ttl: int = keys.LOCATION_TTL) -> None:
        self._orders = orders
        self._ttl = ttl
        self._locations: dict[str, tuple[float, dict[str, Any]]] = {}

    async def put(self, porter_id: str, location: dict[str, Any]) -> set[str]:
        self._locations[porter_id] = (time.time() + self._ttl, location)
        return self._orders.porter_orders_now(porter_id)  # once per GPS update: no second coroutine

    async def get(self, porter_id: str) -> dict[str, Any] | None:
        entry = self._locations.get(porter_id)
        if entry is None or entry[0] < time.time():
            return None
        return entry[1]


def memory_stores() -> Stores:
    orders = MemoryOrderAccessStore()
    tokens = MemoryReconnectTokenStore()
    return Stores(
        orders=orders,
        sessions=MemorySessionStore(tokens),
        subscriptions=MemorySubscriptionStore(tokens),
        reconnect=tokens,
        locations=MemoryLocationStore(orders),
    )
