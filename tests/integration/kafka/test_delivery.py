"""Delivery semantics through real gateways: duplicates and redelivery reach clients once, poison
records never block a partition, and a broker outage flips readiness without touching sockets."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from realtime_contract import Env
from realtime_gateway.ingest.envelope import build_envelope
from tests.integration.kafka.conftest import Deploy, KafkaDeployment, eventually, uid
from tests.support.gateway_fixtures import TEST_JWT_SECRET, mint_token
from tests.support.gateway_proc import http_json
from tests.support.kafka_server import KafkaBroker
from tests.support.procs import ManagedProcess, free_port, wait_until
from tests.support.sio import SioClient

pytestmark = pytest.mark.integration

QUIET = 0.7


async def committed(d: KafkaDeployment, group: str, topic_key: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=d.broker.bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(max(meta.offset, 0) for tp, meta in offsets.items() if tp.topic == d.topics[topic_key])


async def end_offsets(d: KafkaDeployment, topic_key: str) -> int:
    parts = await d.partitions(topic_key)
    consumer = AIOKafkaConsumer(bootstrap_servers=d.broker.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
    finally:
        await consumer.stop()
    return sum(ends.values())


async def rewind(d: KafkaDeployment, group: str, topic_key: str, within: float = 45.0) -> None:
    """Commit offset 0 for every partition: the state of a consumer that crashed before committing.

    Retried: the broker accepts it only once the stopped member has left the group.
    """
    parts = await d.partitions(topic_key)
    deadline = time.monotonic() + within
    while True:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=d.broker.bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign(parts)
            await consumer.commit(dict.fromkeys(parts, 0))
            return
        except KafkaError:
            if time.monotonic() > deadline:
                raise
        finally:
            await consumer.stop()
        await asyncio.sleep(0.5)


@pytest.mark.parametrize("redis", ["standalone", "cluster"])
async def test_the_same_event_produced_twice_reaches_each_client_once(
    kafka_deploy: Deploy, redis: str
) -> None:
    d = await kafka_deploy(2, redis=redis)
    _, _, order_id, c, p = await d.order_members()

    envelope = build_envelope("order.status_changed", {"orderId": order_id, "status": "loading"})
    for _ in range(2):  # a backend retrying its send
        await d.produce_raw("orderEvents", orjson.dumps(envelope), order_id)
    follow_up = await d.produce(
        "orderEvents", "order.status_changed", {"orderId": order_id, "status": "on_the_way"}, key=order_id
    )
    for client in (c, p):
        first = await client.next("order:status", timeout=20)
        second = await client.next("order:status", timeout=20)
        # Same partition, in order: the duplicate was dropped between the two.
        assert (first["eventId"], second["eventId"]) == (envelope["eventId"], follow_up["eventId"])
    await asyncio.sleep(QUIET)
    assert c.pending("order:status") == [] and p.pending("order:status") == []
    topic = d.topics["orderEvents"]
    assert d.metric("realtime_dedup_drops_total", topic=topic) == 1
    assert d.metric("realtime_kafka_records_total", topic=topic, result="duplicate") == 1
    # order.created, order.assigned, the event, the follow-up
    assert d.metric("realtime_kafka_records_total", topic=topic, result="delivered") == 4


async def test_a_consumer_restarted_before_commit_delivers_nothing_twice(kafka_deploy: Deploy) -> None:
    # Instance 0 consumes in the test's group; instance 1 (where the clients are) in a group of
    # its own, so instance 0 can be stopped and its group rewound while the clients stay connected.
    d = await kafka_deploy(1)
    client_group = uid("rtg-clients")
    await d.start_gateways(1, **{Env.KAFKA_CONSUMER_GROUP: client_group})
    _, _, order_id, c, p = await d.order_members(customer_instance=1)

    statuses = ["accepted", "loading", "on_the_way"]
    for status in statuses:
        await d.produce(
            "orderEvents", "order.status_changed", {"orderId": order_id, "status": status}, key=order_id
        )
    for client in (c, p):
        # Two groups race for each event here (per-order ordering holds within one group only).
        got = [(await client.next("order:status", timeout=20))["status"] for _ in statuses]
        assert sorted(got) == sorted(statuses)
    total = await end_offsets(d, "orderEvents")

    async def caught_up(group: str) -> bool:
        return await committed(d, group, "orderEvents") == total

    await eventually(lambda: caught_up(d.group), within=45, what="instance 0 committed everything")
    await asyncio.to_thread(d.procs[0].stop)
    await rewind(d, d.group, "orderEvents")
    assert await committed(d, d.group, "orderEvents") == 0
    # The restarted consumer reads every record again (committing as it goes); the Redis dedup
    # drops them all, so no client sees a second copy.
    await d.start_gateways(1)
    await eventually(lambda: caught_up(d.group), within=60, what="restarted consumer re-read everything")
    await asyncio.sleep(QUIET)
    assert c.pending("order:status") == [] and p.pending("order:status") == []
    # New events still flow, once each.
    await d.produce(
        "orderEvents", "order.status_changed", {"orderId": order_id, "status": "arrived"}, key=order_id
    )
    for client in (c, p):
        assert (await client.next("order:status", timeout=20))["status"] == "arrived"
    await asyncio.sleep(QUIET)
    assert c.pending("order:status") == [] and p.pending("order:status") == []


async def test_poison_records_are_skipped_and_the_next_event_is_delivered(kafka_deploy: Deploy) -> None:
    d = await kafka_deploy(2)
    customer = uid("cust")
    order_id = await d.order(customer)
    c = await d.connect(customer, "customer", instance=1)
    await d.subscribe(c, order_id)

    poison = [
        b"\x00\x01 definitely not json",
        orjson.dumps(
            {**build_envelope("order.completed", {"orderId": order_id}), "type": "order.teleported"}
        ),
        orjson.dumps(
            {
                "eventId": uid("e"),
                "type": "order.status_changed",
                "occurredAt": "2026-01-01T00:00:00Z",
                "payload": {"orderId": order_id},
            }
        ),
        orjson.dumps({"type": "order.status_changed", "payload": {"orderId": order_id, "status": "x"}}),
    ]
    for value in poison:  # same key as the order: the same partition as the valid event after them
        await d.produce_raw("orderEvents", value, order_id)
    valid = await d.produce(
        "orderEvents", "order.status_changed", {"orderId": order_id, "status": "picked_up"}, key=order_id
    )
    got = await c.next("order:status", timeout=20)
    assert (got["eventId"], got["status"]) == (valid["eventId"], "picked_up")
    total = await end_offsets(d, "orderEvents")

    async def past_the_poison() -> bool:
        return await committed(d, d.group, "orderEvents") == total

    await eventually(past_the_poison, within=20, what="offsets committed past the poison")
    await asyncio.sleep(QUIET)
    assert c.pending("order:status") == []
    logs = "".join(proc.tail(400) for proc in d.procs)
    assert logs.count("skipping malformed record") == len(poison)
    assert f"{d.topics['orderEvents']}/" in logs  # logged with topic/partition@offset
    malformed = d.metric("realtime_kafka_records_total", topic=d.topics["orderEvents"], result="malformed")
    assert malformed == len(poison)


async def test_broker_outage_flips_readiness_and_sockets_stay_up(
    kafka_deploy: Deploy, kafka_fresh: KafkaBroker
) -> None:
    d = await kafka_deploy(1, broker=kafka_fresh)
    gw = d.procs[0]
    customer = uid("cust")
    order_id = await d.order(customer)
    c = await d.connect(customer, "customer")
    await d.subscribe(c, order_id)
    assert gw.readyz()[1]["checks"]["kafka"] is True

    await asyncio.to_thread(kafka_fresh.stop)

    def not_ready() -> dict[str, Any] | None:
        status, body = gw.readyz()
        return body if status == 503 else None

    body = await asyncio.to_thread(wait_until, not_ready, timeout=30, what="/readyz 503 while Kafka is down")
    assert body["checks"]["kafka"] is False and body["checks"].get("redis", True) is True
    # Sockets are unaffected: still connected, Redis-backed calls still work.
    assert c.connected
    assert (await c.call("order:subscribe", {"orderId": order_id}))["ok"] is True
    assert gw.proc.alive()

    started = time.monotonic()
    await asyncio.to_thread(kafka_fresh.start)
    await asyncio.to_thread(gw.wait_ready, 60)
    assert time.monotonic() - started < 90
    await d.produce(
        "orderEvents", "order.status_changed", {"orderId": order_id, "status": "resumed"}, key=order_id
    )
    assert (await c.next("order:status", timeout=30))["status"] == "resumed"


async def test_a_gateway_started_while_the_broker_is_down_serves_sockets_and_becomes_ready(
    kafka_deploy: Deploy, kafka_fresh: KafkaBroker, tmp_path: Path
) -> None:
    d = await kafka_deploy(0, broker=kafka_fresh)
    await asyncio.to_thread(kafka_fresh.stop)
    port = free_port()
    env = {
        **d.env,
        Env.HOST: "127.0.0.1",
        Env.PORT: str(port),
        Env.INSTANCE_ID: "gw-broker-down",
        Env.JWT_SECRET: TEST_JWT_SECRET,
    }
    proc = ManagedProcess(
        "gw-broker-down", [sys.executable, "-m", "realtime_gateway", "serve"], tmp_path, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def not_ready() -> dict[str, Any] | None:
            status, body = http_json(url + "/readyz")
            return body if status == 503 else None

        body = await asyncio.to_thread(wait_until, not_ready, timeout=30, what="/readyz 503", proc=proc)
        assert body["checks"]["kafka"] is False
        assert http_json(url + "/healthz")[0] == 200
        # Sockets are served while Kafka is away.
        user = uid("cust")
        client = await SioClient(url, "/client").connect(token=mint_token(user, "customer"))
        try:
            await asyncio.to_thread(kafka_fresh.start)

            def ready() -> bool:
                return http_json(url + "/readyz")[0] == 200

            await asyncio.to_thread(
                wait_until, ready, timeout=90, what="/readyz 200 after the broker started", proc=proc
            )
            payload = {"userId": user, "notificationId": "n-late", "title": "t", "body": "b", "data": {}}
            await d.produce("notificationEvents", "notification.created", payload, key=user)
            assert (await client.next("notification", timeout=30))["notificationId"] == "n-late"
        finally:
            await client.disconnect()
        assert "kafka consumer cannot connect" in proc.tail(400)
    finally:
        proc.stop()
