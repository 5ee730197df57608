"""The embedded mode's reconnect tokens (expired ones swept amortised, never per issue) and sessions."""

from __future__ import annotations

import time

import pytest

from realtime_gateway.state.base import ReconnectGrant, SocketRecord
from realtime_gateway.state.memory import SWEEP_MIN_TOKENS, MemoryReconnectTokenStore, MemorySessionStore

pytestmark = pytest.mark.unit


class CountingStore(MemoryReconnectTokenStore):
    def __init__(self) -> None:
        super().__init__()
        self.sweeps = 0

    def sweep(self) -> int:
        self.sweeps += 1
        return super().sweep()


def grant(expires_in: float, namespace: str = "/client") -> ReconnectGrant:
    return ReconnectGrant("u1", "customer", namespace, time.time() + expires_in)


async def test_issue_and_consume_once() -> None:
    store = MemoryReconnectTokenStore()
    token = await store.issue(grant(3600), 60)
    store.add_order(token, "o1")
    assert await store.consume(token, "/porter") is not None  # wrong namespace: kept for the caller to refuse
    restored = await store.consume(token, "/client")
    assert restored is not None and restored.orders == frozenset({"o1"})
    assert await store.consume(token, "/client") is None


async def test_expired_token_is_refused_even_before_a_sweep() -> None:
    store = MemoryReconnectTokenStore()
    token = await store.issue(grant(-1), 60)
    assert len(store) == 1
    assert await store.consume(token, "/client") is None
    assert len(store) == 0


async def test_sweeps_are_amortised_over_many_live_tokens() -> None:
    store = CountingStore()
    n = 10 * SWEEP_MIN_TOKENS
    for _ in range(n):
        await store.issue(grant(3600), 60)
    # Doubling thresholds: 1024, 2048, 4096, 8192 — a handful of sweeps, not one per issue.
    assert 1 <= store.sweeps <= 5
    assert len(store) == n


async def test_expired_tokens_are_dropped_when_the_map_grows() -> None:
    store = CountingStore()
    for _ in range(SWEEP_MIN_TOKENS):
        await store.issue(grant(-1), 60)  # the user's session is over: expired on arrival
    assert store.sweeps == 0 and len(store) == SWEEP_MIN_TOKENS
    live = await store.issue(grant(3600), 60)
    assert store.sweeps == 1
    assert len(store) == 1
    assert await store.consume(live, "/client") is not None
    assert store.sweep() == 0


async def test_orders_follow_the_token_from_none_to_many() -> None:
    store = MemoryReconnectTokenStore()
    token = await store.issue(grant(3600), 60)
    store.remove_order(token, "o0")  # nothing held yet: no error
    store.add_order(token, "o1")
    store.add_order(token, "o2")
    store.remove_order(token, "o1")
    store.extend(token, 120)
    restored = await store.consume(token, "/client")
    assert restored is not None and restored.orders == frozenset({"o2"})
    carried = ReconnectGrant("u1", "customer", "/client", time.time() + 3600, frozenset({"o3"}))
    again = await store.issue(carried, 60)
    store.add_order(again, "o4")
    restored = await store.consume(again, "/client")
    assert restored is not None and restored.orders == frozenset({"o3", "o4"})
    plain = await store.issue(grant(3600), 60)
    restored = await store.consume(plain, "/client")
    assert restored is not None and restored.orders == frozenset()


async def test_sessions_of_a_user_across_devices() -> None:
    sessions = MemorySessionStore(MemoryReconnectTokenStore())

    def record(sid: str, user: str = "u1") -> SocketRecord:
        return SocketRecord(sid, user, "customer", "/client", "gw-1")

    assert await sessions.sockets_of_user("u1") == set()
    await sessions.register(record("s1"))
    await sessions.register(record("s1"))  # registered twice: still one socket
    assert await sessions.sockets_of_user("u1") == {"s1"}
    await sessions.register(record("s2"))
    await sessions.register(record("s3"))
    await sessions.register(record("x1", "u2"))
    assert await sessions.sockets_of_user("u1") == {"s1", "s2", "s3"}
    found = await sessions.sockets_of_user("u1")
    found.clear()  # a copy: the store is unaffected
    assert await sessions.sockets_of_user("u1") == {"s1", "s2", "s3"}
    await sessions.unregister("s1", "u1")
    await sessions.unregister("s3", "u1")
    assert await sessions.sockets_of_user("u1") == {"s2"}
    await sessions.unregister("nope", "u1")
    await sessions.unregister("s2", "u1")
    await sessions.unregister("s2", "u1")
    assert await sessions.sockets_of_user("u1") == set()
    assert await sessions.sockets_of_user("u2") == {"x1"}
    assert (await sessions.get_socket("x1")) == record("x1", "u2")
    assert await sessions.get_socket("s2") is None
