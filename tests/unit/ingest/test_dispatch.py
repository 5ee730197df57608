"""Dispatch decisions with recording fakes of the ports (pure logic: no I/O to fake away)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from realtime_gateway.ingest import envelope as ev
from realtime_gateway.ingest.dispatch import Dispatcher, Outcome
from realtime_gateway.ingest.stores import MemoryDedupStore, MemoryOfferStore
from tests.unit.ingest.test_envelope import SAMPLES, envelope

pytestmark = pytest.mark.unit


class RecordingEmitter:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, str, dict[str, Any]]] = []
        self.fail = 0

    async def _record(self, kind: str, target: str | None, event: str, data: dict[str, Any]) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("fan-out down")
        self.calls.append((kind, target, event, data))

    async def to_order(
        self, order_id: str, event: str, data: dict[str, Any], *, skip_sid: str | None = None
    ) -> None:
        await self._record("order", order_id, event, data)

    async def to_user(
        self, user_id: str, event: str, data: dict[str, Any], *, skip_sid: str | None = None
    ) -> None:
        await self._record("user", user_id, event, data)

    async def to_admins(self, event: str, data: dict[str, Any]) -> None:
        await self._record("admins", None, event, data)


@dataclass
class Access:
    customer_id: str | None = None
    porter_id: str | None = None


class RecordingAccess:
    def __init__(self) -> None:
        self.orders: dict[str, Access] = {}
        self.expired: list[str] = []

    async def record_created(self, order_id: str, customer_id: str) -> None:
        self.orders.setdefault(order_id, Access()).customer_id = customer_id

    async def record_assigned(self, order_id: str, porter_id: str) -> None:
        self.orders.setdefault(order_id, Access()).porter_id = porter_id

    async def expire(self, order_id: str) -> None:
        self.orders.pop(order_id, None)
        self.expired.append(order_id)

    async def get(self, order_id: str) -> Access | None:
        return self.orders.get(order_id)


@pytest.fixture
def parts() -> tuple[Dispatcher, RecordingEmitter, RecordingAccess, MemoryOfferStore]:
    emitter, access, offers = RecordingEmitter(), RecordingAccess(), MemoryOfferStore()
    return Dispatcher(emitter, access, offers, MemoryDedupStore()), emitter, access, offers


def event(event_type: str, payload: dict[str, Any] | None = None, event_id: str = "e-1") -> ev.Event:
    return ev.parse_event(envelope(event_type, payload, eventId=event_id))


async def test_order_created_and_assigned_feed_the_access_store(parts: Any) -> None:
    dispatcher, emitter, access, _ = parts
    assert await dispatcher.handle(event("order.created", event_id="a")) is Outcome.DELIVERED
    assert await dispatcher.handle(event("order.assigned", event_id="b")) is Outcome.DELIVERED
    assert access.orders["o1"] == Access(customer_id="c1", porter_id="p1")
    assert emitter.calls == []


async def test_status_change_goes_to_the_order_room_with_event_metadata(parts: Any) -> None:
    dispatcher, emitter, _, _ = parts
    await dispatcher.handle(event("order.status_changed"))
    assert emitter.calls == [
        (
            "order",
            "o1",
            "order:status",
            {
                "orderId": "o1",
                "status": "picked_up",
                "etaMinutes": 7,
                "eventId": "e-1",
                "occurredAt": "2026-01-01T12:00:00Z",
            },
        )
    ]


@pytest.mark.parametrize("final", ["completed", "cancelled"])
async def test_final_status_is_emitted_before_access_expires(parts: Any, final: str) -> None:
    dispatcher, emitter, access, _ = parts
    await dispatcher.handle(event("order.created", event_id="a"))
    await dispatcher.handle(event(f"order.{final}", event_id="b"))
    assert emitter.calls[0][:3] == ("order", "o1", "order:status")
    assert emitter.calls[0][3]["status"] == final and emitter.calls[0][3]["final"] is True
    assert access.expired == ["o1"]
    assert "o1" not in access.orders


async def test_job_offer_is_stored_and_sent_to_the_porter_only(parts: Any) -> None:
    dispatcher, emitter, _, offers = parts
    await dispatcher.handle(event("job.offer.created"))
    assert emitter.calls == [
        (
            "user",
            "p1",
            "job:offer",
            {"offerId": "f1", "orderId": "o1", "porterId": "p1", "expiresAt": "2030-01-01T00:00:00Z"},
        )
    ]
    assert "f1" in offers._offers


async def test_notification_goes_to_the_user_without_the_routing_field(parts: Any) -> None:
    dispatcher, emitter, _, _ = parts
    await dispatcher.handle(event("notification.created"))
    assert emitter.calls == [
        ("user", "c1", "notification", {"notificationId": "n1", "title": "Hi", "body": "B", "data": {"k": 1}})
    ]


async def test_availability_goes_to_admins(parts: Any) -> None:
    dispatcher, emitter, _, _ = parts
    await dispatcher.handle(event("porter.availability_changed"))
    assert emitter.calls == [
        (
            "admins",
            None,
            "porter:availability",
            {"porterId": "p1", "available": True, "occurredAt": "2026-01-01T12:00:00Z"},
        )
    ]


async def test_chat_message_goes_to_the_order_room(parts: Any) -> None:
    dispatcher, emitter, _, _ = parts
    await dispatcher.handle(event("chat.message.sent"))
    kind, target, name, data = emitter.calls[0]
    assert (kind, target, name) == ("order", "o1", "chat:message")
    assert data["messageId"] == "m1"
    assert data["senderRole"] == "customer"


@pytest.mark.parametrize("event_type", sorted(ev.PRODUCED_ONLY_TYPES))
async def test_own_produced_types_are_ignored(parts: Any, event_type: str) -> None:
    dispatcher, emitter, _, _ = parts
    assert await dispatcher.handle(event(event_type)) is Outcome.IGNORED
    assert emitter.calls == []


@pytest.mark.parametrize("event_type", sorted(set(SAMPLES) - ev.PRODUCED_ONLY_TYPES))
async def test_every_consumed_type_has_a_rule_and_is_deduplicated(parts: Any, event_type: str) -> None:
    dispatcher, emitter, _, _ = parts
    assert await dispatcher.handle(event(event_type)) is Outcome.DELIVERED
    before = list(emitter.calls)
    assert await dispatcher.handle(event(event_type)) is Outcome.DUPLICATE
    assert emitter.calls == before
    assert dispatcher.stats.by_outcome["duplicate"] == 1


async def test_a_failed_effect_releases_the_claim_so_a_redelivery_is_applied(parts: Any) -> None:
    dispatcher, emitter, _, _ = parts
    emitter.fail = 1
    with pytest.raises(ConnectionError):
        await dispatcher.handle(event("order.status_changed"))
    assert await dispatcher.handle(event("order.status_changed")) is Outcome.DELIVERED
    assert len(emitter.calls) == 1
