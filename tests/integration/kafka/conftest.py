"""Gateways on the real Kafka broker and real Redis, with topics and a consumer group of the test's
own (so tests sharing the session broker cannot see each other's records)."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from realtime_contract import Env
from realtime_gateway.ingest.envelope import build_envelope
from tests.support.deploy import ROLE_NAMESPACE, eventually, redis_target, uid
from tests.support.gateway_fixtures import GatewayFactory, mint_token
from tests.support.gateway_proc import GatewayProcess
from tests.support.kafka_server import KafkaBroker
from tests.support.sio import SioClient

TOPIC_KEYS = ("orderEvents", "porterEvents", "notificationEvents", "chatEvents")
# Re-exported for this directory's tests.
__all__ = [
    "TOPIC_ENV",
    "TOPIC_KEYS",
    "Deploy",
    "KafkaDeployment",
    "NoAccess",
    "eventually",
    "uid",
    "without_recovery",
]

TOPIC_ENV = {
    "orderEvents": Env.KAFKA_TOPIC_ORDER_EVENTS,
    "porterEvents": Env.KAFKA_TOPIC_PORTER_EVENTS,
    "notificationEvents": Env.KAFKA_TOPIC_NOTIFICATION_EVENTS,
    "chatEvents": Env.KAFKA_TOPIC_CHAT_EVENTS,
}


class NoAccess:
    """An order-access store that knows no order (ingest tests that do not authorise sockets)."""

    async def record_created(self, order_id: str, customer_id: str) -> None: ...
    async def record_assigned(self, order_id: str, porter_id: str) -> None: ...
    async def expire(self, order_id: str) -> None: ...
    async def get(self, order_id: str) -> None:
        return None


def without_recovery(data: dict[str, Any]) -> dict[str, Any]:
    """An order-room event minus the recovery stamps (``offset``, ``epoch``) the emitter adds."""
    return {k: v for k, v in data.items() if k not in ("offset", "epoch")}


@dataclass
class KafkaDeployment:
    broker: KafkaBroker
    redis: Any  # decoded-response Redis or RedisCluster, for inspecting keys
    topics: dict[str, str]
    group: str
    env: dict[str, str]
    factory: GatewayFactory
    procs: list[GatewayProcess] = field(default_factory=list)
    clients: list[SioClient] = field(default_factory=list)
    producer: AIOKafkaProducer | None = None

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.procs]

    async def start_gateways(self, count: int, **env: Any) -> list[GatewayProcess]:
        first = len(self.procs)
        merged = {**self.env, **env}
        started = await asyncio.gather(
            *(asyncio.to_thread(self.factory, name=f"kafka-gw{first + i}", **merged) for i in range(count))
        )
        self.procs.extend(started)
        return list(started)

    def metric(self, sample_name: str, **labels: str) -> float:
        """The sum over every gateway's /metrics of the samples with that name and those labels."""
        total = 0.0
        for proc in self.procs:
            with urllib.request.urlopen(proc.url + "/metrics", timeout=5) as resp:
                text = resp.read().decode()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == sample_name and all(
                        sample.labels.get(k) == v for k, v in labels.items()
                    ):
                        total += sample.value
        return total

    async def connect(self, user_id: str, role: str, instance: int = 0) -> SioClient:
        client = SioClient(self.procs[instance].url, ROLE_NAMESPACE[role])
        self.clients.append(client)
        return await client.connect(token=mint_token(user_id, role))

    # --- Kafka ---------------------------------------------------------------------------------
    async def _producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            self.producer = AIOKafkaProducer(bootstrap_servers=self.broker.bootstrap, acks="all")
            await self.producer.start()
        return self.producer

    async def produce_raw(self, topic_key: str, value: bytes, key: str) -> None:
        producer = await self._producer()
        await producer.send_and_wait(self.topics[topic_key], value, key=key.encode())

    async def produce(
        self,
        topic_key: str,
        event_type: str,
        payload: dict[str, Any],
        *,
        key: str,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        envelope = build_envelope(event_type, payload, event_id=event_id)
        await self.produce_raw(topic_key, orjson.dumps(envelope), key)
        return envelope

    async def partitions(self, topic_key: str) -> list[TopicPartition]:
        topic = self.topics[topic_key]
        admin = AIOKafkaAdminClient(bootstrap_servers=self.broker.bootstrap)
        await admin.start()
        try:
            [described] = await admin.describe_topics([topic])
        finally:
            await admin.close()
        return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]

    async def records(
        self, topic_key: str, *, event_type: str | None = None, at_least: int = 0, within: float = 20.0
    ) -> list[ConsumerRecord[bytes, bytes]]:
        """Every record on the topic up to its current end (optionally of one type); waits up to
        ``within`` seconds for at least ``at_least`` of them."""
        parts = await self.partitions(topic_key)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.broker.bootstrap, enable_auto_commit=False)
        await consumer.start()
        deadline = time.monotonic() + within
        try:
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            found: list[ConsumerRecord[bytes, bytes]] = []
            while True:
                # Read exactly up to the end offsets as of now, so "none" really means none.
                ends = await consumer.end_offsets(parts)
                while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
                    batch = await consumer.getmany(*parts, timeout_ms=500)
                    for recs in batch.values():
                        for record in recs:
                            if event_type is None or orjson.loads(record.value)["type"] == event_type:
                                found.append(record)
                if len(found) >= at_least or time.monotonic() > deadline:
                    return found
                await asyncio.sleep(0.2)
        finally:
            await consumer.stop()

    # --- orders as the backend announces them ---------------------------------------------------
    async def order(self, customer_id: str, porter_id: str | None = None) -> str:
        order_id = uid("order")
        await self.produce(
            "orderEvents", "order.created", {"orderId": order_id, "customerId": customer_id}, key=order_id
        )
        if porter_id is not None:
            await self.produce(
                "orderEvents", "order.assigned", {"orderId": order_id, "porterId": porter_id}, key=order_id
            )
        return order_id

    async def order_members(
        self, *, customer_instance: int = 0, porter_instance: int = 1
    ) -> tuple[str, str, str, SioClient, SioClient]:
        """``(customer, porter, order_id, customer_client, porter_client)`` of a new order, both
        connected and subscribed to its room."""
        customer, porter = uid("cust"), uid("porter")
        order_id = await self.order(customer, porter)
        c = await self.connect(customer, "customer", instance=customer_instance)
        p = await self.connect(porter, "porter", instance=porter_instance)
        await self.subscribe(c, order_id)
        await self.subscribe(p, order_id)
        return customer, porter, order_id, c, p

    async def subscribe(self, client: SioClient, order_id: str, within: float = 20.0) -> None:
        """Subscribe once the gateway has consumed the order's access events."""

        async def attempt() -> bool:
            ack = await client.call("order:subscribe", {"orderId": order_id})
            if ack["ok"]:
                return True
            # NOT_FOUND before order.created, FORBIDDEN before order.assigned was consumed.
            assert ack["error"]["code"] in ("NOT_FOUND", "FORBIDDEN"), ack
            return False

        await eventually(attempt, within=within, what=f"subscription to {order_id}")


Deploy = Callable[..., Awaitable[KafkaDeployment]]


@pytest.fixture
async def kafka_deploy(
    request: pytest.FixtureRequest, kafka_broker: KafkaBroker, gateway_factory: GatewayFactory
) -> AsyncIterator[Deploy]:
    """``await deploy(instances, broker=None, redis="standalone"|"cluster", **env)``."""
    deployments: list[KafkaDeployment] = []

    async def deploy(
        instances: int = 2, *, broker: KafkaBroker | None = None, redis: str = "standalone", **env: Any
    ) -> KafkaDeployment:
        broker = broker or kafka_broker
        client, redis_env = redis_target(request, cluster=redis == "cluster")
        suffix = uuid.uuid4().hex[:10]
        topics = {key: f"{key}-{suffix}" for key in TOPIC_KEYS}
        group = f"rtg-{suffix}"
        base_env = {
            **redis_env,
            Env.KAFKA_BOOTSTRAP_SERVERS: broker.bootstrap,
            Env.KAFKA_CONSUMER_GROUP: group,
            Env.KAFKA_AUTO_CREATE_TOPICS: "true",
            Env.KAFKA_TOPIC_PARTITIONS: "3",
            Env.KAFKA_AUTO_OFFSET_RESET: "earliest",
            **{TOPIC_ENV[key]: name for key, name in topics.items()},
            **{k: str(v) for k, v in env.items()},
        }
        d = KafkaDeployment(broker, client, topics, group, base_env, gateway_factory)
        deployments.append(d)
        if instances:
            await d.start_gateways(instances)
        return d

    yield deploy
    for d in deployments:
        for client in d.clients:
            await client.disconnect()
        if d.producer is not None:
            await d.producer.stop()
        await d.redis.aclose()
