"""Chat while the Kafka broker is down: the sender is told it failed (never a silent loss), and a
retry with the same clientMessageId after the broker is back is delivered once."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from realtime_contract import Env
from realtime_gateway.state.redis_store import RedisOrderAccessStore
from tests.integration.reliability.conftest import LoggingClient, uid
from tests.support.gateway_fixtures import GatewayFactory, mint_token
from tests.support.kafka_server import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


async def test_chat_send_reports_a_broker_outage_and_the_retry_is_delivered_once(
    kafka_fresh: KafkaBroker, redis_url: str, gateway_factory: GatewayFactory
) -> None:
    suffix = uid("t")
    env = {
        Env.REDIS_URL: redis_url,
        Env.KAFKA_BOOTSTRAP_SERVERS: kafka_fresh.bootstrap,
        Env.KAFKA_CONSUMER_GROUP: f"rtg-{suffix}",
        Env.KAFKA_AUTO_CREATE_TOPICS: "true",
        Env.KAFKA_AUTO_OFFSET_RESET: "earliest",
        Env.KAFKA_TOPIC_CHAT_EVENTS: f"chat-{suffix}",
        Env.KAFKA_TOPIC_ORDER_EVENTS: f"orders-{suffix}",
        Env.KAFKA_TOPIC_PORTER_EVENTS: f"porters-{suffix}",
        Env.KAFKA_TOPIC_NOTIFICATION_EVENTS: f"notifications-{suffix}",
    }
    gateways = [gateway_factory(name=f"chat-gw{i}", **env) for i in range(2)]
    customer, porter, order_id = uid("cust"), uid("porter"), uid("order")
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        access = RedisOrderAccessStore(redis)
        await access.record_created(order_id, customer)
        await access.record_assigned(order_id, porter)
    finally:
        await redis.aclose()
    c = LoggingClient(gateways[0].url, "/client")
    p = LoggingClient(gateways[1].url, "/porter")
    try:
        await c.connect(token=mint_token(customer, "customer"))
        await p.connect(token=mint_token(porter, "porter"))
        for client in (c, p):
            assert (await client.call("order:subscribe", {"orderId": order_id}))["ok"] is True
        message = {"orderId": order_id, "text": "I am at the door", "clientMessageId": "cm-1"}
        assert (await c.call("chat:message:send", {**message, "clientMessageId": "cm-0"}, timeout=20))["ok"]
        assert (await p.next("chat:message", timeout=20))["clientMessageId"] == "cm-0"

        await asyncio.to_thread(kafka_fresh.stop)
        failed = await c.call("chat:message:send", message, timeout=30)
        assert failed["ok"] is False, failed
        assert failed["error"]["code"] in ("INTERNAL", "UNAVAILABLE")
        assert "retry" in failed["error"]["message"]
        assert c.connected and p.connected

        await asyncio.to_thread(kafka_fresh.start)
        retried = None
        for _ in range(20):  # the producer reconnects in the background; retry like a client would
            retried = await c.call("chat:message:send", message, timeout=30)
            if retried["ok"]:
                break
            await asyncio.sleep(1)
        assert retried is not None and retried["ok"] is True, retried
        got = await p.next("chat:message", timeout=30)
        assert (got["clientMessageId"], got["messageId"]) == ("cm-1", retried["messageId"])
        assert isinstance(got["offset"], int)
        await asyncio.sleep(3)  # a second copy (the failed attempt surfacing late) would show now
        late = p.pending("chat:message")
        assert late == [], f"duplicate chat message after the outage: {late}"
    finally:
        await c.disconnect()
        await p.disconnect()
