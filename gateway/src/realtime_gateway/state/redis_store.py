"""Redis implementations of the stores (standalone, Sentinel or Cluster client; decoded responses).

Writes that belong together go in one non-transactional pipeline (one round trip; on Cluster
redis-py splits it per node). The one read-modify-delete that must be atomic (consuming a
reconnect token) is a Lua script over two keys sharing a hash tag.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from typing import Any

import orjson

from realtime_gateway.state import keys
from realtime_gateway.state.base import (
    LiveSocket,
    OrderAccess,
    ReconnectGrant,
    SocketRecord,
    Stores,
)
from realtime_gateway.state.multiplex import FastRedis

# redis.asyncio.Redis or redis.asyncio.RedisCluster: the command surface used here is shared.
RedisClient = Any

_CONSUME_TOKEN = """
local v = redis.call('GET', KEYS[1])
if not v then return false end
local ok, d = pcall(cjson.decode, v)
if ok and d['n'] ~= ARGV[1] then return {v, {}} end
redis.call('DEL', KEYS[1])
local s = redis.call('SMEMBERS', KEYS[2])
redis.call('DEL', KEYS[2])
return {v, s}
"""


class RedisOrderAccessStore:
    def __init__(self, client: RedisClient, ttl: int = keys.ORDER_ACCESS_TTL) -> None:
        self._r = client
        self._ttl = ttl

    async def record_created(self, order_id: str, customer_id: str) -> None:
        key = keys.order_access(order_id)
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.hset(key, "customerId", customer_id)
            pipe.expire(key, self._ttl)
            await pipe.execute()

    async def record_assigned(self, order_id: str, porter_id: str) -> None:
        key = keys.order_access(order_id)
        previous = await self._r.hget(key, "porterId")
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.hset(key, "porterId", porter_id)
            pipe.expire(key, self._ttl)
            pipe.sadd(keys.porter_orders(porter_id), order_id)
            pipe.expire(keys.porter_orders(porter_id), self._ttl)
            if previous and previous != porter_id:
                pipe.srem(keys.porter_orders(previous), order_id)
            await pipe.execute()

    async def get(self, order_id: str) -> OrderAccess | None:
        data = await self._r.hgetall(keys.order_access(order_id))
        if not data:
            return None
        return OrderAccess(order_id, data.get("customerId"), data.get("porterId"))

    async def expire(self, order_id: str) -> None:
        porter = await self._r.hget(keys.order_access(order_id), "porterId")
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.delete(keys.order_access(order_id))
            pipe.delete(keys.order_subscription(order_id))
            if porter:
                pipe.srem(keys.porter_orders(porter), order_id)
            await pipe.execute()

    async def orders_of_porter(self, porter_id: str) -> set[str]:
        return set(await self._r.smembers(keys.porter_orders(porter_id)))


class RedisSessionStore:
    def __init__(self, client: RedisClient, ttl: int = keys.SESSION_TTL) -> None:
        self._r = client
        self._ttl = ttl

    async def register(self, record: SocketRecord) -> None:
        sk, uk = keys.socket_user(record.sid), keys.user_socket(record.user_id)
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.hset(
                sk,
                mapping={
                    "userId": record.user_id,
                    "role": record.role,
                    "namespace": record.namespace,
                    "instance": record.instance_id,
                },
            )
            pipe.expire(sk, self._ttl)
            pipe.sadd(uk, record.sid)
            pipe.expire(uk, self._ttl)
            await pipe.execute()

    async def unregister(self, sid: str, user_id: str) -> None:
        # SREM of the last member deletes the set: no key is left for a user with no sockets.
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.delete(keys.socket_user(sid))
            pipe.srem(keys.user_socket(user_id), sid)
            await pipe.execute()

    async def sockets_of_user(self, user_id: str) -> set[str]:
        return set(await self._r.smembers(keys.user_socket(user_id)))

    async def refresh(self, sockets: Iterable[LiveSocket]) -> None:
        # Batches keep one pipeline's reply small on an instance with thousands of sockets.
        batch: list[LiveSocket] = []
        for live in sockets:
            batch.append(live)
            if len(batch) >= 500:
                await self._refresh(batch)
                batch = []
        if batch:
            await self._refresh(batch)

    async def _refresh(self, batch: list[LiveSocket]) -> None:
        async with self._r.pipeline(transaction=False) as pipe:
            for live in batch:
                pipe.expire(keys.socket_user(live.sid), self._ttl)
                pipe.expire(keys.user_socket(live.user_id), self._ttl)
                for order_id in live.orders:
                    pipe.expire(keys.order_subscription(order_id), self._ttl)
                pipe.expire(keys.reconnect_token(live.reconnect_token), live.reconnect_ttl)
                pipe.expire(keys.reconnect_subs(live.reconnect_token), live.reconnect_ttl)
            await pipe.execute()

    async def get_socket(self, sid: str) -> SocketRecord | None:
        data = await self._r.hgetall(keys.socket_user(sid))
        if not data:
            return None
        return SocketRecord(sid, data["userId"], data["role"], data["namespace"], data["instance"])


class RedisSubscriptionStore:
    def __init__(
        self, client: RedisClient, ttl: int = keys.SUBSCRIPTION_TTL, token_ttl: int = keys.SESSION_TTL
    ) -> None:
        self._r = client
        self._ttl = ttl
        self._token_ttl = token_ttl

    async def add(self, order_id: str, sid: str, reconnect_token: str) -> None:
        ok, rk = keys.order_subscription(order_id), keys.reconnect_subs(reconnect_token)
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.sadd(ok, sid)
            pipe.expire(ok, self._ttl)
            pipe.sadd(rk, order_id)
            pipe.expire(rk, self._token_ttl)
            await pipe.execute()

    async def remove(self, order_id: str, sid: str, reconnect_token: str) -> None:
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.srem(keys.order_subscription(order_id), sid)
            pipe.srem(keys.reconnect_subs(reconnect_token), order_id)
            await pipe.execute()

    async def drop_socket(self, sid: str, order_ids: Iterable[str]) -> None:
        orders = list(order_ids)
        if not orders:
            return
        async with self._r.pipeline(transaction=False) as pipe:
            for order_id in orders:
                pipe.srem(keys.order_subscription(order_id), sid)
            await pipe.execute()

    async def subscribers(self, order_id: str) -> set[str]:
        return set(await self._r.smembers(keys.order_subscription(order_id)))


class RedisReconnectTokenStore:
    def __init__(self, client: RedisClient) -> None:
        self._r = client

    async def issue(self, grant: ReconnectGrant, ttl: int) -> str:
        token = secrets.token_urlsafe(32)
        # Never outlive the credential the session started from.
        ttl = max(1, min(ttl, int(grant.expires_at - time.time())))
        value = orjson.dumps(
            {"u": grant.user_id, "r": grant.role, "n": grant.namespace, "x": grant.expires_at}
        )
        tk, sk = keys.reconnect_token(token), keys.reconnect_subs(token)
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.set(tk, value, ex=ttl)
            if grant.orders:
                pipe.sadd(sk, *sorted(grant.orders))
                pipe.expire(sk, ttl)
            await pipe.execute()
        return token

    async def consume(self, token: str, namespace: str) -> ReconnectGrant | None:
        """Single use: a token restores one socket, then a fresh one is issued. A token presented
        on another namespace is returned (to be refused) but not spent."""
        result = await self._r.eval(
            _CONSUME_TOKEN, 2, keys.reconnect_token(token), keys.reconnect_subs(token), namespace
        )
        if not result:
            return None
        raw, orders = result
        data = orjson.loads(raw)
        return ReconnectGrant(
            user_id=data["u"],
            role=data["r"],
            namespace=data["n"],
            expires_at=float(data["x"]),
            orders=frozenset(o.decode() if isinstance(o, bytes) else o for o in orders),
        )


class RedisLocationStore:
    def __init__(
        self, client: RedisClient, ttl: int = keys.LOCATION_TTL, fast: FastRedis | None = None
    ) -> None:
        self._r = client
        self._ttl = ttl
        # The auto-pipelined connection (state/multiplex.py); without it a redis-py pipeline.
        self._fast = fast

    async def put(self, porter_id: str, location: dict[str, Any]) -> set[str]:
        # One round trip: the write and the lookup of the porter's orders.
        if self._fast is not None:
            # The location rate-limit check of this update already sent the SMEMBERS (see
            # ratelimit/redis_limiter.py): no round trip of our own. The SET is not waited for;
            # it leaves with the update's SPUBLISH, and this connection's later reads see it.
            lkey, okey = keys.porter_location(porter_id), keys.porter_orders(porter_id)
            ahead = self._fast.take("SMEMBERS", okey)
            if ahead is not None:
                self._fast.send("SET", lkey, orjson.dumps(location), "EX", self._ttl)
                members = await ahead
                if not isinstance(members, Exception):
                    return {o.decode() for o in members}
                # An error reply (e.g. the slot moved on Cluster): the full path below.
            stored, orders = await self._fast.execute_many(
                (
                    ("SET", lkey, orjson.dumps(location), "EX", self._ttl),
                    ("SMEMBERS", okey),
                )
            )
            for reply in (stored, orders):
                if isinstance(reply, Exception):
                    raise reply
            return {o.decode() for o in orders}
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.set(keys.porter_location(porter_id), orjson.dumps(location), ex=self._ttl)
            pipe.smembers(keys.porter_orders(porter_id))
            _, orders = await pipe.execute()
        return set(orders)

    async def get(self, porter_id: str) -> dict[str, Any] | None:
        # On the fast connection when there is one: it sees the SETs ``put`` did not wait for.
        if self._fast is not None:
            raw = await self._fast.execute("GET", keys.porter_location(porter_id))
        else:
            raw = await self._r.get(keys.porter_location(porter_id))
        if raw is None:
            return None
        value: dict[str, Any] = orjson.loads(raw)
        return value


def redis_stores(
    client: RedisClient,
    *,
    session_ttl: int = keys.SESSION_TTL,
    order_access_ttl: int = keys.ORDER_ACCESS_TTL,
    reconnect_ttl: int = keys.SESSION_TTL,
    fast: FastRedis | None = None,
) -> Stores:
    return Stores(
        orders=RedisOrderAccessStore(client, order_access_ttl),
        sessions=RedisSessionStore(client, session_ttl),
        subscriptions=RedisSubscriptionStore(client, session_ttl, reconnect_ttl),
        reconnect=RedisReconnectTokenStore(client),
        locations=RedisLocationStore(client, fast=fast),
    )
