"""``POST /api/events``: the same envelope and handlers as Kafka, behind a service credential.
Embedded mode (no Redis, no Kafka) is driven entirely through it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest

from realtime_contract import EVENTS_API_PATH, Env
from realtime_gateway.fanout.emitter import order_room
from realtime_gateway.ingest.envelope import build_envelope
from tests.integration.kafka.conftest import Deploy, uid, without_recovery
from tests.support.deploy import until
from tests.support.gateway_fixtures import EmbeddedFactory, mint_token
from tests.support.sio import SioClient

pytestmark = pytest.mark.integration

API_KEY = "test-api-key-0123456789abcdef"
QUIET = 0.5


async def post(
    base_url: str, body: Any, *, token: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(base_url + EVENTS_API_PATH, json=body, headers=hdrs) as resp,
    ):
        return resp.status, await resp.json()


def service_token() -> str:
    return mint_token("orders-service", "service")


async def connect(url: str, user: str, role: str) -> SioClient:
    namespace = {"customer": "/client", "porter": "/porter", "admin": "/admin"}[role]
    return await SioClient(url, namespace).connect(token=mint_token(user, role))


async def test_embedded_mode_authorizes_and_delivers_through_the_api(
    embedded_factory: EmbeddedFactory,
) -> None:
    gw = await embedded_factory()
    customer, porter, order_id = uid("cust"), uid("porter"), uid("order")
    created = build_envelope("order.created", {"orderId": order_id, "customerId": customer})
    assigned = build_envelope("order.assigned", {"orderId": order_id, "porterId": porter})
    assert await post(gw.url, created, token=service_token()) == (
        200,
        {"ok": True, "eventId": created["eventId"], "outcome": "delivered"},
    )
    assert (await post(gw.url, assigned, token=service_token()))[0] == 200

    c = await connect(gw.url, customer, "customer")
    p = await connect(gw.url, porter, "porter")
    stranger = await connect(gw.url, uid("cust"), "customer")
    try:
        assert (await c.call("order:subscribe", {"orderId": order_id}))["ok"] is True
        assert (await p.call("order:subscribe", {"orderId": order_id}))["ok"] is True
        assert (await stranger.call("order:subscribe", {"orderId": order_id}))["error"]["code"] == "FORBIDDEN"

        status = build_envelope("order.status_changed", {"orderId": order_id, "status": "picked_up"})
        assert (await post(gw.url, status, token=service_token()))[1]["outcome"] == "delivered"
        expected = {
            "orderId": order_id,
            "status": "picked_up",
            "eventId": status["eventId"],
            "occurredAt": status["occurredAt"],
        }
        assert without_recovery(await c.next("order:status")) == expected
        assert without_recovery(await p.next("order:status")) == expected
        # The same event again is acknowledged as a duplicate and not delivered twice.
        assert (await post(gw.url, status, token=service_token()))[1]["outcome"] == "duplicate"

        # Chat in embedded mode goes straight to the room (no Kafka).
        ack = await c.call(
            "chat:message:send", {"orderId": order_id, "text": "hello", "clientMessageId": "c1"}
        )
        assert ack["ok"] is True
        assert (await p.next("chat:message"))["text"] == "hello"
        assert (await c.next("chat:message"))["messageId"] == ack["messageId"]
        await asyncio.sleep(QUIET)
        for client in (c, p, stranger):
            assert client.pending("order:status") == [] and client.pending("chat:message") == []

        # The final status ends the room: both sockets leave it, and a late event reaches no one.
        done = build_envelope("order.completed", {"orderId": order_id})
        assert (await post(gw.url, done, token=service_token()))[1]["outcome"] == "delivered"
        for client in (c, p):
            final = await client.next("order:status")
            assert (final["status"], final["final"]) == ("completed", True)
        conns, rooms = gw.gateway.handlers.conns, gw.gateway.manager.rooms
        await until(
            lambda: (
                not any(order_id in conn.orders for conn in conns.values())
                and not rooms["/client"].get(order_room(order_id))
            ),
            within=5,
            what="the sockets to leave the ended order's room",
        )
        late = build_envelope("order.status_changed", {"orderId": order_id, "status": "late"})
        assert (await post(gw.url, late, token=service_token()))[1]["outcome"] == "delivered"
        await asyncio.sleep(QUIET)
        assert c.pending("order:status") == [] and p.pending("order:status") == []
    finally:
        for client in (c, p, stranger):
            await client.disconnect()


async def test_embedded_job_offer_accept_through_the_api(embedded_factory: EmbeddedFactory) -> None:
    gw = await embedded_factory()
    porter, order_id, offer_id = uid("porter"), uid("order"), uid("offer")
    phone = await connect(gw.url, porter, "porter")
    tablet = await connect(gw.url, porter, "porter")
    try:
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
        offer = build_envelope(
            "job.offer.created",
            {"offerId": offer_id, "orderId": order_id, "porterId": porter, "expiresAt": expires},
        )
        assert (await post(gw.url, offer, token=service_token()))[0] == 200
        for device in (phone, tablet):
            assert (await device.next("job:offer"))["offerId"] == offer_id
        acks = await asyncio.gather(
            *(d.call("job:offer:accept", {"offerId": offer_id}) for d in (phone, tablet))
        )
        assert sorted(str(a.get("ok")) for a in acks) == ["False", "True"]
        loser = acks[0] if not acks[0]["ok"] else acks[1]
        assert loser["error"]["code"] == "CONFLICT"
        winner_device, other = (phone, tablet) if acks[0]["ok"] else (tablet, phone)
        assert await other.next("job:offer:closed") == {"offerId": offer_id, "reason": "accepted"}
        await asyncio.sleep(QUIET)
        assert winner_device.pending("job:offer:closed") == []
    finally:
        for device in (phone, tablet):
            await device.disconnect()


async def test_credentials_are_required(embedded_factory: EmbeddedFactory) -> None:
    gw = await embedded_factory(**{Env.API_KEY: API_KEY})
    order_id = uid("order")
    body = build_envelope("order.created", {"orderId": order_id, "customerId": "c1"})

    status, answer = await post(gw.url, body)
    assert (status, answer["error"]["code"]) == (401, "AUTH_REQUIRED")
    status, answer = await post(gw.url, body, token="not-a-token")
    assert (status, answer["error"]["code"]) == (401, "AUTH_INVALID")
    status, answer = await post(gw.url, body, token=mint_token("svc", "service", secret="x" * 40))
    assert (status, answer["error"]["code"]) == (401, "AUTH_INVALID")
    status, answer = await post(gw.url, body, token=mint_token("svc", "service", ttl=-120))
    assert (status, answer["error"]["code"]) == (401, "AUTH_INVALID")
    status, answer = await post(gw.url, body, token=mint_token("c1", "customer"))
    assert (status, answer["error"]["code"]) == (403, "FORBIDDEN")
    status, answer = await post(gw.url, body, headers={"X-API-Key": "wrong"})
    assert status == 401
    # Nothing above took effect.
    assert await gw.gateway.stores.orders.get(order_id) is None

    assert (await post(gw.url, body, headers={"X-API-Key": API_KEY}))[0] == 200
    assert (await post(gw.url, body, token=API_KEY))[1]["outcome"] == "duplicate"
    access = await gw.gateway.stores.orders.get(order_id)
    assert access is not None and access.customer_id == "c1"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "invalid JSON"),
        (
            {
                "eventId": "e1",
                "type": "order.created",
                "occurredAt": "2026-01-01T00:00:00Z",
                "payload": {"orderId": "o1"},
            },
            "payload.customerId: Field required",
        ),
        (
            {"eventId": "e1", "type": "order.flown", "occurredAt": "2026-01-01T00:00:00Z", "payload": {}},
            "unknown type 'order.flown'",
        ),
        ({"type": "order.created", "payload": {}}, "eventId: Field required"),
        ([], "a batch holds 1 to 500 envelopes"),
        (
            [
                {
                    "eventId": "ok-1",
                    "type": "order.completed",
                    "occurredAt": "2026-01-01T00:00:00Z",
                    "payload": {"orderId": "o1"},
                },
                7,
            ],
            "[1] envelope must be a JSON object",
        ),
    ],
)
async def test_invalid_envelopes_get_400_with_the_reason(
    embedded_factory: EmbeddedFactory, body: Any, reason: str
) -> None:
    gw = await embedded_factory()
    if isinstance(body, str):
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                gw.url + EVENTS_API_PATH, data=body, headers={"Authorization": f"Bearer {service_token()}"}
            ) as resp,
        ):
            status, answer = resp.status, await resp.json()
    else:
        status, answer = await post(gw.url, body, token=service_token())
    assert status == 400
    assert answer["error"]["code"] == "VALIDATION"
    assert reason in answer["error"]["message"]


async def test_a_batch_is_applied_in_order(embedded_factory: EmbeddedFactory) -> None:
    gw = await embedded_factory()
    order_id, customer = uid("order"), uid("cust")
    batch = [
        build_envelope("order.created", {"orderId": order_id, "customerId": customer}),
        build_envelope("order.status_changed", {"orderId": order_id, "status": "a"}),
    ]
    status, answer = await post(gw.url, batch, token=service_token())
    assert status == 200
    assert [r["outcome"] for r in answer["results"]] == ["delivered", "delivered"]
    assert await gw.gateway.stores.orders.get(order_id) is not None


async def test_api_on_one_instance_reaches_clients_on_another(kafka_deploy: Deploy) -> None:
    d = await kafka_deploy(2)
    customer, order_id = uid("cust"), uid("order")
    created = build_envelope("order.created", {"orderId": order_id, "customerId": customer})
    assert (await post(d.urls[0], created, token=service_token()))[0] == 200
    c = await d.connect(customer, "customer", instance=1)
    assert (await c.call("order:subscribe", {"orderId": order_id}))["ok"] is True
    status = build_envelope("order.status_changed", {"orderId": order_id, "status": "via-http"})
    assert (await post(d.urls[0], status, token=service_token()))[1]["outcome"] == "delivered"
    assert (await c.next("order:status", timeout=10))["status"] == "via-http"
    # The same eventId arriving later over Kafka is a duplicate: one delivery per client.
    await d.produce_raw("orderEvents", orjson.dumps(status), order_id)
    follow = await d.produce(
        "orderEvents", "order.status_changed", {"orderId": order_id, "status": "next"}, key=order_id
    )
    assert (await c.next("order:status", timeout=20))["eventId"] == follow["eventId"]
