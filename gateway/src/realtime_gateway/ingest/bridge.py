"""Assembles the ingest parts for one gateway process; app.py wires the result in one block.

With Redis (production): Redis dedup, offer and chat state; Kafka consumer and producer when
``RTG_KAFKA_BOOTSTRAP_SERVERS`` is set. Embedded (no Redis): in-memory state and no Kafka; chat
is delivered directly and ``POST /api/events`` drives the same dispatcher.
"""

from __future__ import annotations

import logging
from typing import Any

from realtime_gateway.ingest.actions import ChatState, IngestActions
from realtime_gateway.ingest.consumer import KafkaIngest
from realtime_gateway.ingest.dispatch import Dispatcher, IngestStats
from realtime_gateway.ingest.http_api import EventsApi, Verify
from realtime_gateway.ingest.kafka_config import KafkaConfig
from realtime_gateway.ingest.ports import DedupStore, Emitter, OfferStore
from realtime_gateway.ingest.producer import KafkaEventSink
from realtime_gateway.ingest.stores import (
    MemoryChatState,
    MemoryDedupStore,
    MemoryOfferStore,
    RedisChatState,
    RedisDedupStore,
    RedisOfferStore,
)
from realtime_gateway.ingest.telemetry import IngestTelemetry
from realtime_gateway.state.base import OrderAccessStore
from realtime_gateway.state.multiplex import FastRedis
from realtime_gateway.transport.handlers import GatewayHandlers

log = logging.getLogger(__name__)

CLIENT_EVENTS = ("chat:message:send", "chat:typing", "job:offer:accept", "job:offer:reject")


class IngestBridge:
    def __init__(
        self,
        *,
        kafka: KafkaConfig | None,
        redis: Any | None,
        fast: FastRedis | None = None,
        emitter: Emitter,
        access: OrderAccessStore,
        verify: Verify | None,
        api_key: str | None,
    ) -> None:
        self.kafka = kafka
        self.stats = IngestStats()
        self.telemetry = IngestTelemetry()
        dedup: DedupStore
        offers: OfferStore
        chat: ChatState
        if redis is not None:
            dedup, offers = RedisDedupStore(redis, fast=fast), RedisOfferStore(redis)
            chat = RedisChatState(redis)
        else:
            dedup, offers, chat = MemoryDedupStore(), MemoryOfferStore(), MemoryChatState()
        self.dispatcher = Dispatcher(emitter, access, offers, dedup, self.stats)
        self.sink = KafkaEventSink(kafka, telemetry=self.telemetry) if kafka is not None else None
        self.consumer = (
            KafkaIngest(kafka, self.dispatcher, telemetry=self.telemetry) if kafka is not None else None
        )
        self.actions = IngestActions(
            emitter=emitter,
            access=access,
            offers=offers,
            chat=chat,
            dispatcher=self.dispatcher,
            sink=self.sink,
        )
        self.events_api = EventsApi(self.dispatcher, api_key=api_key, verify=verify, telemetry=self.telemetry)

    def instrument(self, metrics: Any, tracing: Any) -> None:
        """Record through the app's ``GatewayMetrics`` and ``Tracing`` (observability/)."""
        self.telemetry.attach(metrics, tracing)

    def install(self, handlers: GatewayHandlers) -> None:
        """Register the client events and the location-sampling hook on the socket handlers."""
        handlers.register_event("chat:message:send", self.actions.chat_send)
        handlers.register_event("chat:typing", self.actions.typing)
        handlers.register_event("job:offer:accept", self.actions.offer_accept)
        handlers.register_event("job:offer:reject", self.actions.offer_reject)
        handlers.location_sink = self.actions

    async def start(self) -> None:
        # Both connect in the background with retries: sockets come up even if Kafka is down.
        if self.sink is not None:
            self.sink.start()
        if self.consumer is not None:
            self.consumer.start()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        await self.actions.drain()
        if self.sink is not None:
            await self.sink.stop()

    async def ready(self) -> bool:
        """Kafka reachable (always true without Kafka): the /readyz check."""
        if self.consumer is None or self.sink is None:
            return True
        return self.consumer.ready and self.sink.ready
