"""What the ingest layer needs from the rest of the gateway, as small structural interfaces.

The wiring module (app.py) passes in the real fan-out and order-access store; the dedup and offer
stores are in :mod:`realtime_gateway.ingest.stores` (Redis and in-memory variants).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


class Emitter(Protocol):
    """Hands a server event to the fan-out (which reaches sockets on every instance)."""

    async def to_order(
        self, order_id: str, event: str, data: dict[str, Any], *, skip_sid: str | None = None
    ) -> None:
        """Every socket subscribed to the order's room."""

    async def to_user(
        self, user_id: str, event: str, data: dict[str, Any], *, skip_sid: str | None = None
    ) -> None:
        """Every socket of that user (all devices, any instance, any namespace)."""

    async def to_admins(self, event: str, data: dict[str, Any]) -> None:
        """Every admin socket."""


class Emitted(Protocol):
    @property
    def appended(self) -> bool:
        """False when the room's history already held the event's id: not emitted again."""


class CallOrderEmitter(Emitter, Protocol):
    """An emitter that takes order-room emits in call order (``emits_in_call_order``) through a
    history that drops an event id it already holds, atomically with the append and publish."""

    def start_to_order(
        self, order_id: str, event: str, data: dict[str, Any], *, skip_sid: str | None = None
    ) -> asyncio.Future[Emitted]:
        """``to_order`` up to the round trip; the future is done when the event was emitted."""


class OrderAccess(Protocol):
    @property
    def customer_id(self) -> str | None: ...

    @property
    def porter_id(self) -> str | None: ...


class OrderAccessStore(Protocol):
    """Who may see an order; learned from ``order.created`` / ``order.assigned``."""

    async def record_created(self, order_id: str, customer_id: str) -> None: ...

    async def record_assigned(self, order_id: str, porter_id: str) -> None: ...

    async def expire(self, order_id: str) -> None:
        """The order is final: its access record and subscriptions go away."""

    async def get(self, order_id: str) -> OrderAccess | None: ...


class DedupStore(Protocol):
    async def seen(self, event_id: str) -> bool:
        """Claim ``event_id``; True when it was claimed before (a duplicate to drop)."""

    async def forget(self, event_id: str) -> None:
        """Release a claim whose effects failed, so a redelivery is processed again."""

    async def claim_many(self, event_ids: Sequence[str]) -> list[bool]:
        """Claim each id in one round trip; per id True when claimed now (apply it), False when
        claimed before (a duplicate). An id twice in the list is claimed by its first occurrence."""

    async def forget_many(self, event_ids: Sequence[str]) -> None:
        """``forget`` for several ids in one round trip."""


class OfferDecision(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"


class OfferOutcome(StrEnum):
    OK = "ok"
    NOT_FOUND = "NOT_FOUND"
    FORBIDDEN = "FORBIDDEN"
    CONFLICT = "CONFLICT"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True, slots=True)
class OfferResult:
    outcome: OfferOutcome
    order_id: str | None = None
    # Porters the offer was made to; they learn it is closed once a porter accepted.
    porter_ids: tuple[str, ...] = ()


class OfferStore(Protocol):
    async def create(self, offer_id: str, order_id: str, porter_id: str, expires_at_ms: int) -> None:
        """Record the offer for ``porter_id`` (an offer may be made to several porters)."""

    async def decide(self, offer_id: str, porter_id: str, decision: OfferDecision) -> OfferResult:
        """Atomically: only an offered porter, only before expiry, only once."""


class EventSink(Protocol):
    """Sends a contract event to Kafka (or, in embedded mode, straight to the dispatcher)."""

    async def send(
        self,
        topic_key: str,
        key: str,
        envelope: Mapping[str, Any],
        *,
        correlation_id: str | None = None,
    ) -> None:
        """Returns once the broker acknowledged (acks=all)."""
