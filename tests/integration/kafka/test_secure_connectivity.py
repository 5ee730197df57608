"""Production connectivity from settings: TLS with SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 on a
real broker's SASL_SSL listener, in-process and through a gateway process."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from realtime_contract import Env
from realtime_gateway.ingest.consumer import KafkaIngest
from realtime_gateway.ingest.dispatch import Dispatcher
from realtime_gateway.ingest.envelope import build_envelope
from realtime_gateway.ingest.kafka_config import KafkaConfig, kafka_config_from_settings
from realtime_gateway.ingest.producer import KafkaEventSink, KafkaUnavailable
from realtime_gateway.ingest.stores import MemoryDedupStore, MemoryOfferStore
from realtime_gateway.ingest.topics import ensure_topics
from realtime_gateway.settings import load_settings
from tests.integration.kafka.conftest import TOPIC_ENV, TOPIC_KEYS, NoAccess, uid
from tests.integration.kafka.secure_broker import MECHANISMS, PASSWORD, USER, SecureKafkaBroker
from tests.integration.kafka.test_ingest_parts import Emitted
from tests.support.gateway_fixtures import GatewayFactory, mint_token
from tests.support.sio import SioClient

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafkaBroker]:
    broker = SecureKafkaBroker(tmp_path_factory.mktemp("kafka-secure"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def secure_env(broker: SecureKafkaBroker, mechanism: str, password: str = PASSWORD) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return {
        Env.KAFKA_BOOTSTRAP_SERVERS: broker.secure_bootstrap,
        Env.KAFKA_SECURITY_PROTOCOL: "SASL_SSL",
        Env.KAFKA_SASL_MECHANISM: mechanism,
        Env.KAFKA_SASL_USERNAME: USER,
        Env.KAFKA_SASL_PASSWORD: password,
        Env.KAFKA_SSL_CAFILE: str(broker.ca_file),
        Env.KAFKA_CONSUMER_GROUP: f"secure-{suffix}",
        Env.KAFKA_AUTO_CREATE_TOPICS: "true",
        Env.KAFKA_TOPIC_PARTITIONS: "1",
        Env.KAFKA_AUTO_OFFSET_RESET: "earliest",
        **{TOPIC_ENV[key]: f"{key}-{suffix}" for key in TOPIC_KEYS},
    }


def config_from(env: dict[str, str]) -> KafkaConfig:
    config = kafka_config_from_settings(load_settings(env))
    assert config is not None
    return config


@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_produce_and_consume_over_sasl_ssl(secure_broker: SecureKafkaBroker, mechanism: str) -> None:
    config = config_from(secure_env(secure_broker, mechanism))
    assert config.client_kwargs()["sasl_mechanism"] == mechanism
    await ensure_topics(config)
    sink = KafkaEventSink(config)
    sink.start()
    emitted = Emitted()
    ingest = KafkaIngest(config, Dispatcher(emitted, NoAccess(), MemoryOfferStore(), MemoryDedupStore()))
    ingest.start()
    try:
        envelope = build_envelope(
            "notification.created",
            {"userId": "u1", "notificationId": "n1", "title": "t", "body": "b", "data": {}},
        )
        await sink.send("notificationEvents", "u1", envelope)
        await emitted.wait_for(1)
        assert emitted.calls[0][:3] == ("user", "u1", "notification")
        assert ingest.ready and sink.ready
    finally:
        await ingest.stop()
        await sink.stop()


async def test_a_wrong_password_never_connects(secure_broker: SecureKafkaBroker) -> None:
    config = config_from(secure_env(secure_broker, "SCRAM-SHA-512", password="wrong-password"))
    sink = KafkaEventSink(config, send_timeout_s=3.0)
    sink.start()
    ingest = KafkaIngest(config, Dispatcher(Emitted(), NoAccess(), MemoryOfferStore(), MemoryDedupStore()))
    ingest.start()
    try:
        with pytest.raises(KafkaUnavailable):
            await sink.send("notificationEvents", "u1", build_envelope("order.completed", {"orderId": "o1"}))
        assert not ingest.ready and not sink.ready
    finally:
        await ingest.stop()
        await sink.stop()


async def test_an_untrusted_certificate_never_connects(
    secure_broker: SecureKafkaBroker, tmp_path: Path
) -> None:
    from tests.integration.kafka.secure_broker import write_tls_material

    other_ca, _ = write_tls_material(tmp_path / "other")
    env = {**secure_env(secure_broker, "PLAIN"), Env.KAFKA_SSL_CAFILE: str(other_ca)}
    sink = KafkaEventSink(config_from(env), send_timeout_s=3.0)
    sink.start()
    try:
        with pytest.raises(KafkaUnavailable):
            await sink.send("notificationEvents", "u1", build_envelope("order.completed", {"orderId": "o1"}))
    finally:
        await sink.stop()


async def test_a_gateway_process_over_sasl_ssl_scram(
    secure_broker: SecureKafkaBroker, redis_url: str, gateway_factory: GatewayFactory
) -> None:
    kafka_env = secure_env(secure_broker, "SCRAM-SHA-512")
    env: dict[str, Any] = {Env.REDIS_URL: redis_url, **kafka_env}
    started = time.monotonic()
    gw = await asyncio.to_thread(gateway_factory, name="secure-gw", **env)
    assert gw.readyz()[1]["checks"]["kafka"] is True
    user = uid("cust")
    client = await SioClient(gw.url, "/client").connect(token=mint_token(user, "customer"))
    try:
        config = config_from(kafka_env)
        sink = KafkaEventSink(config)
        sink.start()
        try:
            payload = {"userId": user, "notificationId": "n-tls", "title": "t", "body": "b", "data": {}}
            await sink.send("notificationEvents", user, build_envelope("notification.created", payload))
        finally:
            await sink.stop()
        assert (await client.next("notification", timeout=30))["notificationId"] == "n-tls"
    finally:
        await client.disconnect()
    assert time.monotonic() - started < 120
