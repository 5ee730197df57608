"""The operator's Kafka topic wiring against the real broker (no Kubernetes needed)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from realtime_operator.kafka_topics import ensure_topics
from tests.support.kafka_fixtures import unique_name
from tests.support.kafka_server import KafkaBroker

pytestmark = pytest.mark.integration


async def partitions(bootstrap: str, topics: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(topics)}
    finally:
        await admin.close()


async def test_missing_topics_are_created_and_small_ones_grown(kafka_broker: KafkaBroker) -> None:
    bootstrap = kafka_broker.bootstrap
    fresh, small, large = unique_name("fresh"), unique_name("small"), unique_name("large")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(name=small, num_partitions=2, replication_factor=1),
                NewTopic(name=large, num_partitions=9, replication_factor=1),
            ]
        )
    finally:
        await admin.close()

    result = await ensure_topics(bootstrap, [fresh, small, large], min_partitions=6)
    assert result.ok, result.message
    assert result.created == (fresh,) and result.grown == (small,)
    assert result.partitions == {fresh: 6, small: 6, large: 9}
    want = {fresh: 6, small: 6, large: 9}
    # Broker metadata catches up with a creation or growth a moment later.
    deadline = asyncio.get_running_loop().time() + 30
    while (seen := await partitions(bootstrap, list(want))) != want:
        assert asyncio.get_running_loop().time() < deadline, f"metadata never showed {want}: {seen}"
        await asyncio.sleep(0.2)

    again = await ensure_topics(bootstrap, [fresh, small, large], min_partitions=6)
    assert again.ok and again.created == () and again.grown == ()


async def test_unreachable_broker_is_a_result_not_an_exception() -> None:
    result = await ensure_topics("127.0.0.1:1", ["t"], min_partitions=3, timeout=5)
    assert not result.ok
    assert "127.0.0.1:1" in result.message
