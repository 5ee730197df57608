"""Maps one parsed contract event to its effects: store updates and emits to the fan-out.

The Kafka consumer and ``POST /api/events`` both end here, so embedded mode and Kafka behave alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, cast

from pydantic import AwareDatetime, TypeAdapter

from realtime_gateway.fanout.emitter import FINAL_STATUS_FIELD, ORDER_STATUS
from realtime_gateway.ingest import envelope as ev
from realtime_gateway.ingest.ports import (
    CallOrderEmitter,
    DedupStore,
    Emitted,
    Emitter,
    OfferStore,
    OrderAccessStore,
)

log = logging.getLogger(__name__)

# Server -> client event names (design.md §3); ORDER_STATUS is fanout/emitter.py's, where the
# final status ends the order's room.
CHAT_MESSAGE = "chat:message"
JOB_OFFER = "job:offer"
JOB_OFFER_CLOSED = "job:offer:closed"
NOTIFICATION = "notification"
PORTER_AVAILABILITY = "porter:availability"
CHAT_TYPING = "chat:typing"


# Event types whose only effect is one emit to their order room.
ORDER_ROOM_ONLY_TYPES: Final = frozenset({"order.status_changed", "chat.message.sent"})


class Outcome(StrEnum):
    DELIVERED = "delivered"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"


@dataclass
class IngestStats:
    """In-process counters; the metrics module exports them (and tests read them)."""

    by_outcome: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    malformed: Counter[str] = field(default_factory=Counter)

    def count_malformed(self, source: str) -> None:
        self.malformed[source] += 1


_DATETIME: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000)


class Dispatcher:
    def __init__(
        self,
        emitter: Emitter,
        access: OrderAccessStore,
        offers: OfferStore,
        dedup: DedupStore,
        stats: IngestStats | None = None,
    ) -> None:
        self._emitter = emitter
        self._access = access
        self._offers = offers
        self._dedup = dedup
        self.stats = stats or IngestStats()
        # Claims of events whose effect failed and whose claim could not be released.
        self._orphaned: set[str] = set()

    @property
    def emits_in_call_order(self) -> bool:
        """True when the emitter takes order-room emits in call order before it first waits: with
        Redis, ``recovery.emitter.ReliableEmitter`` hands them to the history (``history_publishes``),
        which appends and publishes the ones waiting together in one script call, in that order.
        Then one order's consecutive ``ORDER_ROOM_ONLY_TYPES`` events may start together."""
        return bool(getattr(self._emitter, "history_publishes", False))

    async def handle(self, event: ev.Event) -> Outcome:
        """Apply ``event`` once. Raises when an effect failed; the event is then not marked seen."""
        (verdict,) = await self.claim_many([event])
        if verdict is not None:
            return verdict
        return await self.apply_claimed(event)

    async def claim_many(self, events: Sequence[ev.Event]) -> list[Outcome | None]:
        """Claim the events' ids in one round trip: per event ``None`` (claimed now: apply it with
        :meth:`apply_claimed`), or its final outcome (``DUPLICATE``, ``IGNORED``), already counted.

        If the claim fails, no outcome is decided and the claims that may exist are this
        process's: a retry applies those events instead of dropping them.
        """
        verdicts: list[Outcome | None] = []
        to_claim: list[int] = []
        for i, event in enumerate(events):
            if event.type in ev.PRODUCED_ONLY_TYPES:
                verdicts.append(Outcome.IGNORED)
                continue
            verdicts.append(None)
            # An event the history deduplicates itself, in the script that appends and publishes
            # it, needs no claim: a process dying before that script leaves nothing claimed.
            if not self._reclaim(event.event_id) and not self.can_start(event):
                to_claim.append(i)
        if to_claim:
            try:
                fresh = await self._dedup.claim_many([events[i].event_id for i in to_claim])
            except asyncio.CancelledError:
                # Stopping with the claims' fate unknown: give them back (best effort), so a
                # redelivery elsewhere is applied rather than dropped.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        self._dedup.forget_many([events[i].event_id for i in to_claim]), 2.0
                    )
                raise
            except BaseException:
                # A claim whose answer was lost (Redis dropped the connection after the SET) may
                # exist, so the retry in this process applies the event instead of dropping it.
                self._orphaned.update(e.event_id for e, v in zip(events, verdicts, strict=True) if v is None)
                raise
            for i, claimed in zip(to_claim, fresh, strict=True):
                if not claimed:
                    verdicts[i] = Outcome.DUPLICATE
        for verdict in verdicts:
            if verdict is not None:
                self.stats.by_outcome[verdict] += 1
        return verdicts

    async def apply_claimed(self, event: ev.Event) -> Outcome:
        """Apply an event :meth:`claim_many` answered ``None`` for. Raises when an effect failed;
        the claim is then released, so a redelivery or retry applies the event."""
        if self.can_start(event):
            return self.settled(event, await self.start_claimed(event))
        try:
            await self._apply(event)
        except BaseException:
            await self.release([event])
            raise
        return self.applied(event)

    def can_start(self, event: ev.Event) -> bool:
        """Whether :meth:`start_claimed` takes ``event``: an order-room-only event while the
        emitter takes order-room emits in call order, through the Redis history. That history
        drops an event id it already holds in the same script that appends and publishes, so
        these events are not claimed (:meth:`claim_many`): exactly once, without a window in
        which a crashed process holds a claim it never applied."""
        return event.type in ORDER_ROOM_ONLY_TYPES and self.emits_in_call_order

    def start_claimed(self, event: ev.Event) -> asyncio.Future[Emitted]:
        """:meth:`apply_claimed` for an event :meth:`can_start` takes, up to the round trip (no
        task or coroutine per event). The caller passes the result to :meth:`settled`; a failed
        one holds no claim, and a retry or redelivery applies it."""
        order_id, name, data = self._order_room_emit(event)
        return cast(CallOrderEmitter, self._emitter).start_to_order(order_id, name, data)

    def settled(self, event: ev.Event, result: Emitted) -> Outcome:
        """The outcome of a started event: delivered, or a duplicate the history dropped."""
        if result.appended:
            return self.applied(event)
        self.stats.by_outcome[Outcome.DUPLICATE] += 1
        return Outcome.DUPLICATE

    def applied(self, event: ev.Event) -> Outcome:
        self.stats.by_type[event.type] += 1
        self.stats.by_outcome[Outcome.DELIVERED] += 1
        return Outcome.DELIVERED

    async def release(self, events: Sequence[ev.Event]) -> None:
        """Give up claims of events that were not applied; only a cancellation propagates."""
        ids = [event.event_id for event in events if not self.can_start(event)]
        if not ids:
            return
        try:
            await self._dedup.forget_many(ids)
        except BaseException as exc:
            # Redis failed between the claim and the effect: the claims survive (a restarted
            # Redis reloads them), so this process's retry must apply the events rather than
            # drop them as duplicates.
            self._orphaned.update(ids)
            if not isinstance(exc, Exception):
                raise

    def _reclaim(self, event_id: str) -> bool:
        if event_id in self._orphaned:
            self._orphaned.discard(event_id)
            return True
        return False

    async def _apply(self, event: ev.Event) -> None:
        p = event.payload
        env = event.envelope
        match p:
            case ev.OrderCreated():
                await self._access.record_created(p.order_id, p.customer_id)
            case ev.OrderAssigned():
                await self._access.record_assigned(p.order_id, p.porter_id)
            case ev.OrderStatusChanged() | ev.ChatMessageSent():
                await self._emitter.to_order(*self._order_room_emit(event))
            case ev.OrderClosed():
                final = env.type.removeprefix("order.")
                # Access goes first: a client that has seen the final status must not be able to
                # subscribe again (the room's members still get the status).
                await self._access.expire(p.order_id)
                # ``final``: every instance that delivers it takes its sockets out of the room.
                await self._emitter.to_order(
                    p.order_id,
                    ORDER_STATUS,
                    self._status(env, {**p.wire(), "status": final, FINAL_STATUS_FIELD: True}),
                )
            case ev.JobOfferCreated():
                await self._offers.create(p.offer_id, p.order_id, p.porter_id, _ms(p.expires_at))
                await self._emitter.to_user(p.porter_id, JOB_OFFER, p.wire())
            case ev.NotificationCreated():
                data = p.wire()
                data.pop("userId", None)
                await self._emitter.to_user(p.user_id, NOTIFICATION, data)
            case ev.PorterAvailabilityChanged():
                await self._emitter.to_admins(
                    PORTER_AVAILABILITY, {**p.wire(), "occurredAt": self._occurred(env)}
                )
            case _:  # pragma: no cover - PAYLOAD_MODELS and this match are kept in step by a unit test
                raise AssertionError(f"no dispatch rule for {env.type}")

    def _order_room_emit(self, event: ev.Event) -> tuple[str, str, dict[str, Any]]:
        """(order id, client event, data) of an ``ORDER_ROOM_ONLY_TYPES`` event."""
        p = event.payload
        if isinstance(p, ev.OrderStatusChanged):
            return p.order_id, ORDER_STATUS, self._status(event.envelope, p.wire())
        if isinstance(p, ev.ChatMessageSent):
            data = p.wire()
            data.setdefault("clientMessageId", None)
            return p.order_id, CHAT_MESSAGE, data
        raise AssertionError(f"{event.type} is not an order-room-only type")

    @staticmethod
    def _occurred(env: ev.Envelope) -> str:
        # The envelope's own serializer for the one field, not a dump of the whole envelope.
        return str(_DATETIME.dump_python(env.occurred_at, mode="json"))

    def _status(self, env: ev.Envelope, payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "eventId": env.event_id, "occurredAt": self._occurred(env)}
