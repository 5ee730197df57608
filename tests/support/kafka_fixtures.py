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

from tests.support.kafka_server import KafkaBroker


def unique_name(prefix: str) -> str:
    """A topic or group name no other test uses on the shared broker."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    with KafkaBroker(tmp_path_factory.mktemp("kafka")) as broker:
        yield broker


@pytest.fixture
def kafka_fresh(tmp_path: Path) -> Iterator[KafkaBroker]:
    with KafkaBroker(tmp_path / "kafka", name="kafka-fresh") as broker:
        yield broker
