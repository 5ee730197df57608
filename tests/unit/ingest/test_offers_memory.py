"""The in-memory offer store follows the same rules as the Redis Lua script (tested in integration)."""

from __future__ import annotations

import asyncio
import time

import pytest

from realtime_gateway.ingest.ports import OfferDecision, OfferOutcome
from realtime_gateway.ingest.stores import MemoryChatState, MemoryOfferStore

pytestmark = pytest.mark.unit

ACCEPT, REJECT = OfferDecision.ACCEPT, OfferDecision.REJECT


def later(ms: int) -> int:
    return time.time_ns() // 1_000_000 + ms


async def test_first_accept_wins_the_rest_conflict() -> None:
    store = MemoryOfferStore()
    for porter in ("p1", "p2", "p3"):
        await store.create("f1", "o1", porter, later(60_000))
    results = await asyncio.gather(*(store.decide("f1", p, ACCEPT) for p in ("p2", "p1", "p3", "p2")))
    outcomes = [r.outcome for r in results]
    assert outcomes.count(OfferOutcome.OK) == 1
    assert outcomes.count(OfferOutcome.CONFLICT) == 3
    winner = next(r for r in results if r.outcome is OfferOutcome.OK)
    assert winner.order_id == "o1"
    assert set(winner.porter_ids) == {"p1", "p2", "p3"}


async def test_only_offered_porters_may_answer() -> None:
    store = MemoryOfferStore()
    await store.create("f1", "o1", "p1", later(60_000))
    assert (await store.decide("f1", "p9", ACCEPT)).outcome is OfferOutcome.FORBIDDEN
    assert (await store.decide("nope", "p1", ACCEPT)).outcome is OfferOutcome.NOT_FOUND


async def test_late_answers_are_expired_not_missing() -> None:
    store = MemoryOfferStore()
    await store.create("f1", "o1", "p1", later(-1))
    assert (await store.decide("f1", "p1", ACCEPT)).outcome is OfferOutcome.EXPIRED
    assert (await store.decide("f1", "p1", REJECT)).outcome is OfferOutcome.EXPIRED


async def test_reject_is_once_and_leaves_the_offer_open_for_others() -> None:
    store = MemoryOfferStore()
    await store.create("f1", "o1", "p1", later(60_000))
    await store.create("f1", "o1", "p2", later(60_000))
    assert (await store.decide("f1", "p1", REJECT)).outcome is OfferOutcome.OK
    assert (await store.decide("f1", "p1", REJECT)).outcome is OfferOutcome.CONFLICT
    assert (await store.decide("f1", "p1", ACCEPT)).outcome is OfferOutcome.CONFLICT
    assert (await store.decide("f1", "p2", ACCEPT)).outcome is OfferOutcome.OK


async def test_a_repeated_offer_event_does_not_reopen_an_accepted_offer() -> None:
    store = MemoryOfferStore()
    await store.create("f1", "o1", "p1", later(60_000))
    assert (await store.decide("f1", "p1", ACCEPT)).outcome is OfferOutcome.OK
    await store.create("f1", "o1", "p1", later(60_000))
    assert (await store.decide("f1", "p1", ACCEPT)).outcome is OfferOutcome.CONFLICT


async def test_chat_state_dedups_client_message_ids_and_samples_every_count() -> None:
    state = MemoryChatState()
    assert await state.claim_client_message("c1", "cm1", "m1") is None
    assert await state.claim_client_message("c1", "cm1", "m2") == "m1"
    assert await state.claim_client_message("c2", "cm1", "m3") is None
    await state.release_client_message("c1", "cm1")
    assert await state.claim_client_message("c1", "cm1", "m4") is None
    assert [await state.count_location("p1") for _ in range(3)] == [1, 2, 3]
    assert await state.typing_allowed("u1") is True
    assert await state.typing_allowed("u1") is False
    assert await state.typing_allowed("u2") is True
