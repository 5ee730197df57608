"""The ingest parts on the real broker and real Redis, in-process (no gateway): consumer
semantics, the producer's record shape, topic creation, the offer Lua script and the dedup store."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from realtime_gateway.ingest.consumer import KafkaIngest
from realtime_gateway.ingest.dispatch import Dispatcher
from realtime_gateway.ingest.envelope import build_envelope
from realtime_gateway.ingest.kafka_config import KafkaConfig
from realtime_gateway.ingest.ports import OfferDecision, OfferOutcome
from realtime_gateway.ingest.producer import KafkaEventSink
from realtime_gateway.ingest.stores import MemoryOfferStore, RedisDedupStore, RedisOfferStore
from realtime_gateway.ingest.topics import ensure_topics
from tests.integration.kafka.conftest import NoAccess
from tests.support.kafka_fixtures import unique_name
from tests.support.kafka_server import KafkaBroker

pytestmark = pytest.mark.integration


class Emitted:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, str, dict[str, Any]]] = []
        self.changed = asyncio.Event()

    def _add(self, *call: Any) -> None:
        self.calls.append(call)
        self.changed.set()

    async def to_order(
        self, order_id: str, event: str, data: dict[str, Any], *, skip_sid: str | None = None
    ) -> None:
        self._add("order", order_id, event, data)

    async def to_user(
        self, user_id: str, event: str, data: dict[str, Any], *, skip_sid: str | None = None
    ) -> None:
        self._add("user", user_id, event, data)

    async def to_admins(self, event: str, data: dict[str, Any]) -> None:
        self._add("admins", None, event, data)

    async def wait_for(self, count: int, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while len(self.calls) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"expected {count} emits, got {self.calls}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


def config_for(broker: KafkaBroker, *, group: str | None = None, partitions: int = 2) -> KafkaConfig:
    suffix = unique_name("t")
    return KafkaConfig(
        bootstrap_servers=broker.bootstrap,
        consumer_group=group or unique_name("g"),
        topics={
            k: f"{k}-{suffix}" for k in ("orderEvents", "porterEvents", "notificationEvents", "chatEvents")
        },
        auto_create_topics=True,
        topic_partitions=partitions,
        auto_offset_reset="earliest",
    )


def status_event(event_id: str, order_id: str = "o1", status: str = "picked_up") -> bytes:
    env = build_envelope("order.status_changed", {"orderId": order_id, "status": status}, event_id=event_id)
    return orjson.dumps(env)


async def produce(broker: KafkaBroker, topic: str, values: list[bytes], key: bytes = b"o1") -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def committed_total(broker: KafkaBroker, config: KafkaConfig, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(config.consumer_group)
    finally:
        await admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic)


async def run_ingest(config: KafkaConfig, dispatcher: Dispatcher) -> KafkaIngest:
    ingest = KafkaIngest(config, dispatcher, health_interval_s=0.5)
    ingest.start()
    return ingest


async def test_poison_records_are_skipped_and_the_next_event_is_delivered(
    kafka_broker: KafkaBroker, redis_client: aioredis.Redis
) -> None:
    config = config_for(kafka_broker, partitions=1)
    await ensure_topics(config)
    topic = config.topic("orderEvents")
    poison = [
        b"{not json",
        orjson.dumps(
            build_envelope("order.created", {"orderId": "o1", "customerId": "c1"}) | {"type": "x.y"}
        ),
        orjson.dumps(
            {
                "eventId": "e-m",
                "type": "order.status_changed",
                "occurredAt": "2026-01-01T00:00:00Z",
                "payload": {"orderId": "o1"},
            }
        ),
    ]
    await produce(kafka_broker, topic, [*poison, status_event("e-ok")])
    emitted = Emitted()
    dispatcher = Dispatcher(emitted, NoAccess(), MemoryOfferStore(), RedisDedupStore(redis_client))
    ingest = await run_ingest(config, dispatcher)
    try:
        await emitted.wait_for(1)
        assert emitted.calls[0][:3] == ("order", "o1", "order:status")
        assert emitted.calls[0][3]["eventId"] == "e-ok"
        assert dispatcher.stats.malformed[topic] == 3
        # All four offsets are committed: the poison did not hold the partition.
        deadline = time.monotonic() + 20
        while await committed_total(kafka_broker, config, topic) != 4:
            assert time.monotonic() < deadline, "offsets were not committed past the poison records"
            await asyncio.sleep(0.2)
        assert ingest.ready
    finally:
        await ingest.stop()
    assert len(emitted.calls) == 1


async def test_duplicates_and_redelivery_reach_the_fanout_once(
    kafka_broker: KafkaBroker, redis_client: aioredis.Redis
) -> None:
    config = config_for(kafka_broker)
    await ensure_topics(config)
    topic = config.topic("orderEvents")
    # The same event produced twice (a backend retry), then a distinct one.
    await produce(
        kafka_broker, topic, [status_event("dup-1"), status_event("dup-1"), status_event("other-2")]
    )
    emitted = Emitted()
    dedup = RedisDedupStore(redis_client)
    first = await run_ingest(config, Dispatcher(emitted, NoAccess(), MemoryOfferStore(), dedup))
    try:
        await emitted.wait_for(2)
    finally:
        await first.stop()
    # Another consumer re-reading the same records from the start is what a consumer restarted
    # before its commit sees: every record again. The shared Redis dedup drops them all.
    rereader = KafkaConfig(
        bootstrap_servers=config.bootstrap_servers,
        consumer_group=unique_name("g-restart"),
        topics=config.topics,
        auto_offset_reset="earliest",
    )
    again = Dispatcher(emitted, NoAccess(), MemoryOfferStore(), dedup)
    second = await run_ingest(rereader, again)
    try:
        deadline = time.monotonic() + 30
        while again.stats.by_outcome["duplicate"] < 3:
            assert time.monotonic() < deadline, f"re-read not finished: {again.stats}"
            await asyncio.sleep(0.1)
    finally:
        await second.stop()
    ids = [call[3]["eventId"] for call in emitted.calls]
    assert sorted(ids) == ["dup-1", "other-2"]


async def test_producer_writes_contract_keys_and_headers(kafka_broker: KafkaBroker) -> None:
    config = config_for(kafka_broker)
    await ensure_topics(config)
    sink = KafkaEventSink(config)
    sink.start()
    envelope = build_envelope(
        "job.offer.accepted", {"offerId": "f1", "orderId": "o7", "porterId": "p1"}, correlation_id="corr-7"
    )
    try:
        await sink.send("porterEvents", "p1", envelope)
    finally:
        await sink.stop()
    consumer = AIOKafkaConsumer(
        config.topic("porterEvents"), bootstrap_servers=kafka_broker.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=10_000)
        records = [r for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
    assert len(records) == 1
    record = records[0]
    assert record.key == b"p1"
    headers = dict(record.headers)
    assert headers["correlation-id"] == b"corr-7"
    assert headers["traceparent"].startswith(b"00-")
    assert orjson.loads(record.value) == envelope


async def test_topics_are_created_once_with_the_configured_partitions(kafka_broker: KafkaBroker) -> None:
    config = config_for(kafka_broker, partitions=4)
    assert sorted(await ensure_topics(config)) == sorted(config.topics.values())
    assert await ensure_topics(config) == []
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([config.topic("chatEvents")])
    finally:
        await admin.close()
    assert len(described[0]["partitions"]) == 4


async def test_consumer_waits_for_a_broker_that_starts_late(
    kafka_fresh: KafkaBroker, redis_client: aioredis.Redis
) -> None:
    kafka_fresh.stop()
    config = config_for(kafka_fresh, partitions=1)
    emitted = Emitted()
    ingest = await run_ingest(
        config, Dispatcher(emitted, NoAccess(), MemoryOfferStore(), RedisDedupStore(redis_client))
    )
    try:
        await asyncio.sleep(1.5)  # several failed connection attempts, not a synchronization
        assert not ingest.ready
        await asyncio.to_thread(kafka_fresh.start)
        deadline = time.monotonic() + 60
        while not ingest.ready:
            assert time.monotonic() < deadline, "consumer did not connect after the broker came up"
            await asyncio.sleep(0.2)
        await produce(kafka_fresh, config.topic("orderEvents"), [status_event("late-1")])
        await emitted.wait_for(1)
    finally:
        await ingest.stop()


# --- Redis stores -----------------------------------------------------------------------------


def later_ms(ms: int) -> int:
    return time.time_ns() // 1_000_000 + ms


async def test_offer_script_lets_exactly_one_of_many_concurrent_accepts_win(redis_url: str) -> None:
    clients = [aioredis.from_url(redis_url) for _ in range(4)]
    try:
        stores = [RedisOfferStore(c) for c in clients]
        porters = [f"p{i}" for i in range(8)]
        for p in porters:
            await stores[0].create("offer-1", "o1", p, later_ms(60_000))
        results = await asyncio.gather(
            *(stores[i % 4].decide("offer-1", p, OfferDecision.ACCEPT) for i, p in enumerate(porters * 2))
        )
        outcomes = [r.outcome for r in results]
        assert outcomes.count(OfferOutcome.OK) == 1
        assert outcomes.count(OfferOutcome.CONFLICT) == len(outcomes) - 1
        ok = next(r for r in results if r.outcome is OfferOutcome.OK)
        assert ok.order_id == "o1"
        assert sorted(ok.porter_ids) == sorted(porters)
        ttl = await clients[0].pttl("job:offer:{offer-1}")
        assert 60_000 < ttl <= 60_000 + 10 * 60_000
    finally:
        for c in clients:
            await c.aclose()


async def test_offer_script_refuses_strangers_late_and_unknown_answers(redis_client: aioredis.Redis) -> None:
    store = RedisOfferStore(redis_client)
    await store.create("f-late", "o1", "p1", later_ms(-1))
    await store.create("f-ok", "o2", "p1", later_ms(60_000))
    assert (await store.decide("f-ok", "p2", OfferDecision.ACCEPT)).outcome is OfferOutcome.FORBIDDEN
    assert (await store.decide("f-none", "p1", OfferDecision.ACCEPT)).outcome is OfferOutcome.NOT_FOUND
    assert (await store.decide("f-late", "p1", OfferDecision.ACCEPT)).outcome is OfferOutcome.EXPIRED
    assert (await store.decide("f-ok", "p1", OfferDecision.REJECT)).outcome is OfferOutcome.OK
    assert (await store.decide("f-ok", "p1", OfferDecision.ACCEPT)).outcome is OfferOutcome.CONFLICT


async def test_dedup_store_claims_once_until_released(redis_client: aioredis.Redis) -> None:
    dedup = RedisDedupStore(redis_client)
    assert await dedup.seen("ev-1") is False
    assert await dedup.seen("ev-1") is True
    assert 0 < await redis_client.ttl("event:seen:ev-1") <= 24 * 3600
    await dedup.forget("ev-1")
    assert await dedup.seen("ev-1") is False
