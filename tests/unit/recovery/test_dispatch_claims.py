"""An event whose effect failed while Redis was going away must not be dropped as a duplicate by
this process's retry, even though its dedup claim survived (a restarted Redis reloads it)."""

from __future__ import annotations

from typing import Any

import pytest

from realtime_gateway.ingest import envelope as ev
from realtime_gateway.ingest.dispatch import Dispatcher, Outcome
from realtime_gateway.ingest.stores import MemoryDedupStore, MemoryOfferStore
from realtime_gateway.state.memory import MemoryOrderAccessStore

pytestmark = pytest.mark.unit


class Flaky:
    """An emitter whose first ``failures`` calls fail like a dropped Redis connection."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[dict[str, Any]] = []

    async def to_order(
        self, order_id: str, event: str, data: dict[str, Any], *, skip_sid: str | None = None
    ) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("redis went away")
        self.sent.append(data)

    async def to_user(
        self, user_id: str, event: str, data: dict[str, Any], *, skip_sid: str | None = None
    ) -> None:
        self.sent.append(data)

    async def to_admins(self, event: str, data: dict[str, Any]) -> None:
        self.sent.append(data)


class StuckClaims(MemoryDedupStore):
    """Claims work; releasing them fails (Redis is down by then)."""

    async def forget(self, event_id: str) -> None:
        raise ConnectionError("redis went away")


class LostAnswer(MemoryDedupStore):
    """The first claim is written but its answer never arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.lose = True

    async def seen(self, event_id: str) -> bool:
        claimed = await super().seen(event_id)
        if self.lose:
            self.lose = False
            raise ConnectionError("connection closed by server")
        return claimed


def status() -> ev.Event:
    return ev.parse_event(ev.build_envelope("order.status_changed", {"orderId": "o1", "status": "picked_up"}))


@pytest.mark.parametrize(("dedup", "failures"), [(StuckClaims(), 1), (LostAnswer(), 0)])
async def test_retry_in_this_process_applies_the_event_once(dedup: MemoryDedupStore, failures: int) -> None:
    emitter = Flaky(failures)
    dispatcher = Dispatcher(emitter, MemoryOrderAccessStore(), MemoryOfferStore(), dedup)
    event = status()
    with pytest.raises(ConnectionError):
        await dispatcher.handle(event)
    assert await dispatcher.handle(event) is Outcome.DELIVERED
    assert len(emitter.sent) == 1
    # Afterwards it is an ordinary duplicate.
    assert await dispatcher.handle(event) is Outcome.DUPLICATE
    assert len(emitter.sent) == 1
