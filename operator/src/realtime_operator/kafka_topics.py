"""Ensure the gateway's Kafka topics exist with at least as many partitions as gateway replicas.

Every consumer in the group gets a partition only when partitions >= replicas.max; failures are
returned as a result (reported in the CR's status), never raised into the operator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import InvalidPartitionsError, KafkaError, for_code


@dataclass(frozen=True)
class KafkaAuth:
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class TopicsResult:
    ok: bool
    message: str
    partitions: dict[str, int] = field(default_factory=dict)
    created: tuple[str, ...] = ()
    grown: tuple[str, ...] = ()


def _partition_counts(described: Sequence[dict[str, object]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in described:
        parts = t.get("partitions")
        if isinstance(parts, list):
            out[str(t["topic"])] = len(parts)
    return out


async def _ensure(
    admin: AIOKafkaAdminClient, topics: Sequence[str], min_partitions: int, replication_factor: int
) -> TopicsResult:
    # list_topics does not auto-create; a metadata request naming a missing topic might.
    existing = set(await admin.list_topics())
    missing = [t for t in topics if t not in existing]
    if missing:
        resp = await admin.create_topics(
            [
                NewTopic(name=t, num_partitions=min_partitions, replication_factor=replication_factor)
                for t in missing
            ]
        )
        for name, code, *rest in resp.topic_errors:
            if code and for_code(code).__name__ != "TopicAlreadyExistsError":
                detail = rest[0] if rest and rest[0] else for_code(code).__name__
                return TopicsResult(False, f"creating topic {name} failed: {detail}")
    present = [t for t in topics if t in existing]
    counts = _partition_counts(await admin.describe_topics(present)) if present else {}
    small = {t: n for t, n in counts.items() if n < min_partitions}
    if small:
        try:
            await admin.create_partitions({t: NewPartitions(total_count=min_partitions) for t in small})
        except InvalidPartitionsError as exc:
            # Metadata lags a recent change: the topic may already have the partitions it reported lacking.
            if "already has" not in str(exc):
                raise
    partitions = {t: max(counts.get(t, min_partitions), min_partitions) for t in topics}
    msg = f"{len(topics)} topics with >= {min_partitions} partitions"
    return TopicsResult(True, msg, partitions, tuple(missing), tuple(sorted(small)))


async def ensure_topics(
    bootstrap_servers: str,
    topics: Sequence[str],
    *,
    min_partitions: int,
    replication_factor: int = 1,
    auth: KafkaAuth | None = None,
    timeout: float = 20.0,  # noqa: ASYNC109 - also the admin client's request timeout
) -> TopicsResult:
    auth = auth or KafkaAuth()
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id="realtime-gateway-operator",
        request_timeout_ms=int(timeout * 1000),
        security_protocol=auth.security_protocol,
        sasl_mechanism=auth.sasl_mechanism or "PLAIN",
        sasl_plain_username=auth.username,
        sasl_plain_password=auth.password,
    )
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            return await _ensure(admin, topics, min_partitions, replication_factor)
    except TimeoutError:
        return TopicsResult(False, f"Kafka at {bootstrap_servers} did not answer within {timeout:.0f}s")
    except (KafkaError, OSError) as exc:
        detail = str(exc) if str(exc).startswith(type(exc).__name__) else f"{type(exc).__name__}: {exc}"
        return TopicsResult(False, f"Kafka at {bootstrap_servers}: {detail}")
    finally:
        await admin.close()
