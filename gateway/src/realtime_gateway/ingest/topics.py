"""Dev convenience: create the contract topics when they are missing (RTG_KAFKA_AUTO_CREATE_TOPICS)."""

from __future__ import annotations

import logging
from typing import Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from realtime_gateway.ingest.kafka_config import KafkaConfig

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS: Final = 36


async def ensure_topics(config: KafkaConfig, *, replication_factor: int = 1) -> list[str]:
    """Create the configured topics that do not exist yet; returns the names created."""
    admin = AIOKafkaAdminClient(**config.client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in dict.fromkeys(config.topics.values()) if name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [NewTopic(name, config.topic_partitions, replication_factor) for name in missing]
        )
        created = []
        for topic, code, *rest in response.topic_errors:
            if code == 0:
                created.append(topic)
            elif code != _TOPIC_ALREADY_EXISTS:  # another instance won the race: fine
                raise RuntimeError(
                    f"creating topic {topic!r} failed with error {code}: {rest[0] if rest else ''}"
                )
        if created:
            log.info("created kafka topics %s with %d partitions", created, config.topic_partitions)
        return created
    finally:
        await admin.close()
