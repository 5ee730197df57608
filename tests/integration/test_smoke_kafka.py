"""Smoke tests proving the Kafka fixtures run a real KRaft broker (aiokafka end to end)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from tests.support import kafka_server
from tests.support.kafka_fixtures import create_topic, unique_name
from tests.support.kafka_server import KafkaBroker

pytestmark = pytest.mark.integration

RECORDS = 30
PARTITIONS = 3

Position = tuple[int, int]  # (partition, offset)


async def _produce(bootstrap: str, topic: str, count: int) -> dict[Position, str]:
    """Keyed records; returns where each landed. Same key -> same partition (per-order ordering)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    landed: dict[Position, str] = {}
    partition_of_key: dict[str, int] = {}
    try:
        for i in range(count):
            key = f"order-{i % 10}"
            meta = await producer.send_and_wait(topic, key=key.encode(), value=f"event-{i}".encode())
            assert partition_of_key.setdefault(key, meta.partition) == meta.partition
            landed[(meta.partition, meta.offset)] = f"event-{i}"
    finally:
        await producer.stop()
    assert len({p for p, _ in landed}) > 1, "10 keys over 3 partitions should use more than one"
    return landed


def _consumer(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=4,
    )


async def _consume(consumer: AIOKafkaConsumer, count: int, deadline_s: float = 30.0) -> list[ConsumerRecord]:
    got: list[ConsumerRecord] = []
    deadline = time.monotonic() + deadline_s
    while len(got) < count:
        assert time.monotonic() < deadline, f"consumed {len(got)} of {count} records before the deadline"
        batches = await consumer.getmany(timeout_ms=500, max_records=count - len(got))
        for records in batches.values():
            got.extend(records)
    return got


async def _consume_and_commit_half(
    bootstrap: str, topic: str, group: str
) -> tuple[set[Position], dict[TopicPartition, int]]:
    first = _consumer(bootstrap, topic, group)
    await first.start()
    try:
        done = await _consume(first, RECORDS // 2)
        # Commit exactly what was processed: next offset per partition.
        commit: dict[TopicPartition, int] = {}
        for r in done:
            tp = TopicPartition(r.topic, r.partition)
            commit[tp] = max(commit.get(tp, 0), r.offset + 1)
        await first.commit(commit)
        for tp, offset in commit.items():
            assert await first.committed(tp) == offset
    finally:
        await first.stop()
    return {(r.partition, r.offset) for r in done}, commit


async def test_consumer_group_resumes_from_committed_offsets(kafka_broker: KafkaBroker) -> None:
    bootstrap = kafka_broker.bootstrap
    topic, group = unique_name("smoke"), unique_name("smoke-group")
    await create_topic(bootstrap, topic, PARTITIONS)
    landed = await _produce(bootstrap, topic, RECORDS)
    assert len(landed) == RECORDS

    first_done, commit = await _consume_and_commit_half(bootstrap, topic, group)
    assert len(first_done) == RECORDS // 2

    second = _consumer(bootstrap, topic, group)
    await second.start()
    try:
        rest = await _consume(second, RECORDS - len(first_done))
        # Nothing more is waiting: the second consumer got exactly the uncommitted remainder.
        extra = await second.getmany(timeout_ms=1000)
        assert not any(extra.values())
    finally:
        await second.stop()

    rest_positions = {(r.partition, r.offset) for r in rest}
    assert not rest_positions & first_done, "records before the committed offset were delivered again"
    assert rest_positions | first_done == set(landed), "records were lost"
    assert {(r.partition, r.offset): r.value.decode() for r in rest if r.value} == {
        p: v for p, v in landed.items() if p in rest_positions
    }
    # Each partition resumed exactly at its committed offset (0 where nothing was committed).
    for partition in {r.partition for r in rest}:
        resumed_at = min(r.offset for r in rest if r.partition == partition)
        assert resumed_at == commit.get(TopicPartition(topic, partition), 0)


async def test_broker_restart_keeps_topics_and_committed_offsets(kafka_fresh: KafkaBroker) -> None:
    bootstrap = kafka_fresh.bootstrap
    topic, group = unique_name("restart"), unique_name("restart-group")
    await create_topic(bootstrap, topic, PARTITIONS)
    landed = await _produce(bootstrap, topic, RECORDS)
    first_done, commit = await _consume_and_commit_half(bootstrap, topic, group)

    await kafka_fresh.arestart()
    assert kafka_fresh.bootstrap == bootstrap

    second = _consumer(bootstrap, topic, group)
    await second.start()
    try:
        for tp, offset in commit.items():
            assert await second.committed(tp) == offset
        rest = await _consume(second, RECORDS - len(first_done), deadline_s=60)
    finally:
        await second.stop()
    assert {(r.partition, r.offset) for r in rest} | first_done == set(landed)


async def test_auto_created_topic_has_three_partitions(kafka_broker: KafkaBroker) -> None:
    topic = unique_name("auto")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, b"x"), timeout=30)
        assert len(producer.client.cluster.partitions_for_topic(topic) or ()) == PARTITIONS
    finally:
        await producer.stop()


def test_unprovisioned_jars_fail_naming_the_provisioning_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka_server, "CACHE_DIR", tmp_path)
    with pytest.raises(RuntimeError, match=r"bash tools/kafka\.sh"):
        KafkaBroker(tmp_path / "kafka")
