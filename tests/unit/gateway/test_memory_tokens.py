"""The embedded mode's reconnect-token store: expired tokens are swept amortised, never per issue."""

from __future__ import annotations

import time

import pytest

from realtime_gateway.state.base import ReconnectGrant
from realtime_gateway.state.memory import SWEEP_MIN_TOKENS, MemoryReconnectTokenStore

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
