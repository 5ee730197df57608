"""K's producer against a real broker: what it sends must be what the gateway consumes (contract
envelopes keyed by order id, unique event ids across calls), or K measures something else."""

from __future__ import annotations

import time
from collections import defaultdict

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from bench.scenarios import StatusProducer, make_orders
from realtime_gateway.ingest.envelope import OrderStatusChanged, parse_event
from tests.support.kafka_fixtures import create_topic, unique_name
from tests.support.kafka_server import KafkaBroker

pytestmark = pytest.mark.integration


async def _read(
    bootstrap: str, topic: str, count: int, within_s: float = 30.0
) -> list[tuple[bytes, int, bytes]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    out: list[tuple[bytes, int, bytes]] = []
    deadline = time.monotonic() + within_s
    try:
        while len(out) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out.extend((r.key, r.partition, r.value) for r in records)
    finally:
        await consumer.stop()
    return out


async def test_one_producer_sends_every_call_as_contract_events_keyed_by_order(
    kafka_broker: KafkaBroker,
) -> None:
    topic = unique_name("bench-status")
    await create_topic(kafka_broker.bootstrap, topic, 3)
    orders = make_orders(7, "bp")
    async with StatusProducer(kafka_broker.bootstrap, topic, orders) as producer:
        started = time.monotonic()
        first = await producer.produce(200, 1.0)
        second = await producer.produce(100, 0.5)
        # Paced, not sent at once: the first call spreads 200 events over about a second.
        assert time.monotonic() - started >= 1.2
    assert (first, second) == (200, 50)

    records = await _read(kafka_broker.bootstrap, topic, first + second)
    assert len(records) == first + second
    ids = set()
    partitions: dict[bytes, set[int]] = defaultdict(set)
    for key, partition, value in records:
        event = parse_event(value)
        assert event.type == "order.status_changed"
        assert isinstance(event.payload, OrderStatusChanged)
        assert key == event.payload.order_id.encode()
        ids.add(event.event_id)
        partitions[key].add(partition)
        assert orjson.loads(value)["occurredAt"].endswith("Z")
    # Unique across calls (the gateway would drop a repeated id as a duplicate), every order used,
    # and each order on one partition, so its events keep their order.
    assert len(ids) == first + second
    assert set(partitions) == {o["orderId"].encode() for o in orders}
    assert all(len(p) == 1 for p in partitions.values())
