"""``realtime-gateway emit-event`` drives a client by hand: to an embedded gateway's HTTP API, and to
Kafka for a Redis + Kafka deployment."""

from __future__ import annotations

import asyncio
import os
import sys

import orjson
import pytest

from realtime_contract import Env
from tests.integration.kafka.conftest import TOPIC_ENV, Deploy, uid
from tests.support.gateway_fixtures import TEST_JWT_SECRET, GatewayFactory, mint_token
from tests.support.sio import SioClient

pytestmark = pytest.mark.integration


async def emit_event(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    # Only the variables given: the developer's shell environment must not leak RTG_* settings in.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RTG_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "realtime_gateway",
        "emit-event",
        *args,
        env={**clean, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_emit_event_to_an_embedded_gateway(gateway_factory: GatewayFactory) -> None:
    gw = await asyncio.to_thread(gateway_factory, name="embedded-cli")
    customer, order_id = uid("cust"), uid("order")
    env = {Env.PORT: str(gw.port), Env.JWT_SECRET: TEST_JWT_SECRET}
    code, out, err = await emit_event(
        env, "order.created", orjson.dumps({"orderId": order_id, "customerId": customer}).decode()
    )
    assert code == 0, err
    assert orjson.loads(out)["result"]["outcome"] == "delivered"

    client = await SioClient(gw.url, "/client").connect(token=mint_token(customer, "customer"))
    try:
        assert (await client.call("order:subscribe", {"orderId": order_id}))["ok"] is True
        code, _, err = await emit_event(
            env, "order.status_changed", orjson.dumps({"orderId": order_id, "status": "by-hand"}).decode()
        )
        assert code == 0, err
        assert (await client.next("order:status"))["status"] == "by-hand"
    finally:
        await client.disconnect()

    # A bad payload is refused before anything is sent, with the reason.
    code, _, err = await emit_event(env, "order.status_changed", '{"orderId": "o1"}')
    assert code == 2 and "payload.status: Field required" in err
    # A wrong credential is reported, not ignored.
    code, _, err = await emit_event(env, "order.completed", '{"orderId": "o1"}', "--api-key", "nope")
    assert code == 1 and "HTTP 401" in err


async def test_emit_event_to_kafka_reaches_a_client(kafka_deploy: Deploy) -> None:
    d = await kafka_deploy(1)
    user = uid("cust")
    client = await d.connect(user, "customer")
    env = {
        Env.KAFKA_BOOTSTRAP_SERVERS: d.broker.bootstrap,
        **{TOPIC_ENV[key]: name for key, name in d.topics.items()},
    }
    payload = {"userId": user, "notificationId": "n-cli", "title": "Hi", "body": "from the CLI", "data": {}}
    code, out, err = await emit_event(env, "notification.created", orjson.dumps(payload).decode())
    assert code == 0, err
    assert orjson.loads(out)["to"] == "kafka"
    assert (await client.next("notification", timeout=20))["notificationId"] == "n-cli"
    [record] = await d.records("notificationEvents", at_least=1)
    assert record.key == user.encode()
