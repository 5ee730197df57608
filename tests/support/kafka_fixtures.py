"""pytest fixtures for a real Kafka broker (registered in tests/conftest.py).

- ``kafka_broker`` (session): one KRaft broker shared by the whole run; tests isolate
  themselves with unique topic and group names (see ``unique_name``).
- ``kafka_fresh`` (function): a broker of the test's own, for restart and crash tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.support.deploy import eventually
from tests.support.kafka_server import KafkaBroker


def unique_name(prefix: str) -> str:
    """A topic or group name no other test uses on the shared broker."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` and wait until the broker's metadata shows every partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
        )
        assert [code for _, code, *_ in response.topic_errors] == [0]

        # The controller answers once the topic is committed; a fresh broker's metadata cache
        # can lag it by a moment, so describe until it shows every partition.
        async def described() -> bool:
            [topic_info] = await admin.describe_topics([topic])
            return len(topic_info["partitions"]) == partitions

        await eventually(described, within=15.0, what=f"{topic}'s {partitions} partitions")
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    with KafkaBroker(tmp_path_factory.mktemp("kafka")) as broker:
        yield broker


@pytest.fixture
def kafka_fresh(tmp_path: Path) -> Iterator[KafkaBroker]:
    with KafkaBroker(tmp_path / "kafka", name="kafka-fresh") as broker:
        yield broker
