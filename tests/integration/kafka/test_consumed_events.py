"""Each consumed event type reaches exactly the right sockets, on two gateway instances sharing one
consumer group (partitions spread across them; the Redis fan-out reaches every instance)."""

from __future__ import annotations

import asyncio
import time

import pytest

from realtime_gateway.fanout.emitter import order_room
from realtime_gateway.state import keys
from realtime_gateway.state.keys import room_channel
from tests.integration.kafka.conftest import Deploy, eventually, uid, without_recovery

pytestmark = pytest.mark.integration

# After the expected sockets got an event, how long the others are watched for a stray copy.
QUIET = 0.7


async def test_order_status_reaches_the_order_room_only(kafka_deploy: Deploy) -> None:
    d = await kafka_deploy(2)
    customer, porter, stranger = uid("cust"), uid("porter"), uid("cust")
    order_id = await d.order(customer, porter)
    other_order = await d.order(stranger)
    c = await d.connect(customer, "customer", instance=0)
    p = await d.connect(porter, "porter", instance=1)
    s = await d.connect(stranger, "customer", instance=1)
    await d.subscribe(c, order_id)
    await d.subscribe(p, order_id)
    await d.subscribe(s, other_order)

    sent = await d.produce(
        "orderEvents",
        "order.status_changed",
        {"orderId": order_id, "status": "picked_up", "etaMinutes": 4},
        key=order_id,
    )
    for client in (c, p):
        got = without_recovery(await client.next("order:status", timeout=20))
        assert got == {
            "orderId": order_id,
            "status": "picked_up",
            "etaMinutes": 4,
            "eventId": sent["eventId"],
            "occurredAt": sent["occurredAt"],
        }
    await asyncio.sleep(QUIET)
    assert c.pending("order:status") == [] and p.pending("order:status") == []
    assert s.pending("order:status") == []


@pytest.mark.parametrize("final", ["completed", "cancelled"])
async def test_final_status_then_access_expires(kafka_deploy: Deploy, final: str) -> None:
    d = await kafka_deploy(2)
    _, _, order_id, c, p = await d.order_members()
    watcher = uid("cust")
    control_order = await d.order(watcher)
    w = await d.connect(watcher, "customer", instance=1)
    await d.subscribe(w, control_order)

    await d.produce("orderEvents", f"order.{final}", {"orderId": order_id}, key=order_id)
    for client in (c, p):
        got = await client.next("order:status", timeout=20)
        assert (got["orderId"], got["status"], got["final"]) == (order_id, final, True)
    # Both instances took their socket out of the order's room and dropped its channel.
    channel = room_channel(order_room(order_id))

    async def room_dropped() -> bool:
        [(_, count)] = await d.redis.pubsub_shardnumsub(channel)
        return int(count) == 0

    await eventually(room_dropped, within=10, what="both instances leave the ended order's room")
    # A late event of the ended order reaches nobody; a later event on the same key (so consumed
    # after it, in order) shows it was consumed.
    await d.produce(
        "orderEvents", "order.status_changed", {"orderId": order_id, "status": "late"}, key=order_id
    )
    await d.produce(
        "orderEvents", "order.status_changed", {"orderId": control_order, "status": "seen"}, key=order_id
    )
    assert (await w.next("order:status", timeout=20))["status"] == "seen"
    assert c.pending("order:status") == [] and p.pending("order:status") == []
    # The order's access record is gone: nobody can subscribe to it any more.
    ack = await c.call("order:subscribe", {"orderId": order_id})
    assert ack["ok"] is False and ack["error"]["code"] == "NOT_FOUND"
    assert await d.redis.exists(keys.order_access(order_id), keys.order_subscription(order_id)) == 0
    ack = await p.call("order:subscribe", {"orderId": order_id})
    assert ack["error"]["code"] == "NOT_FOUND"


async def test_job_offer_reaches_every_device_of_the_porter_and_is_stored(kafka_deploy: Deploy) -> None:
    d = await kafka_deploy(2)
    porter, other_porter, customer = uid("porter"), uid("porter"), uid("cust")
    order_id = await d.order(customer)
    phone = await d.connect(porter, "porter", instance=0)
    tablet = await d.connect(porter, "porter", instance=1)
    other = await d.connect(other_porter, "porter", instance=1)
    c = await d.connect(customer, "customer", instance=0)

    offer_id = uid("offer")
    expires_ms = int(time.time() * 1000) + 60_000
    expires_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(expires_ms / 1000)) + "Z"
    await d.produce(
        "orderEvents",
        "job.offer.created",
        {"offerId": offer_id, "orderId": order_id, "porterId": porter, "expiresAt": expires_at, "fee": 12.5},
        key=order_id,
    )
    for device in (phone, tablet):
        got = await device.next("job:offer", timeout=20)
        assert got == {
            "offerId": offer_id,
            "orderId": order_id,
            "porterId": porter,
            "expiresAt": expires_at,
            "fee": 12.5,
        }
    await asyncio.sleep(QUIET)
    assert other.pending("job:offer") == [] and c.pending("job:offer") == []
    key = keys.job_offer(offer_id)
    stored = await d.redis.hgetall(key)
    assert stored["orderId"] == order_id and stored[f"p:{porter}"] == "offered"
    assert await d.redis.pttl(key) > 0


async def test_notification_reaches_a_user_on_both_instances(kafka_deploy: Deploy) -> None:
    d = await kafka_deploy(2)
    user, someone_else = uid("cust"), uid("cust")
    on_a = await d.connect(user, "customer", instance=0)
    on_b = await d.connect(user, "customer", instance=1)
    bystander = await d.connect(someone_else, "customer", instance=0)

    await d.produce(
        "notificationEvents",
        "notification.created",
        {
            "userId": user,
            "notificationId": "n-1",
            "title": "Porter arriving",
            "body": "2 min",
            "data": {"x": 1},
        },
        key=user,
    )
    expected = {"notificationId": "n-1", "title": "Porter arriving", "body": "2 min", "data": {"x": 1}}
    assert await on_a.next("notification", timeout=20) == expected
    assert await on_b.next("notification", timeout=20) == expected
    await asyncio.sleep(QUIET)
    assert on_a.pending("notification") == [] and on_b.pending("notification") == []
    assert bystander.pending("notification") == []


async def test_porter_availability_reaches_admins_only(kafka_deploy: Deploy) -> None:
    d = await kafka_deploy(2)
    porter = uid("porter")
    admin_a = await d.connect(uid("admin"), "admin", instance=0)
    admin_b = await d.connect(uid("admin"), "admin", instance=1)
    p = await d.connect(porter, "porter", instance=0)
    c = await d.connect(uid("cust"), "customer", instance=1)

    sent = await d.produce(
        "porterEvents", "porter.availability_changed", {"porterId": porter, "available": False}, key=porter
    )
    for admin in (admin_a, admin_b):
        got = await admin.next("porter:availability", timeout=20)
        assert got == {"porterId": porter, "available": False, "occurredAt": sent["occurredAt"]}
    await asyncio.sleep(QUIET)
    assert p.pending("porter:availability") == [] and c.pending("porter:availability") == []


async def test_chat_message_from_kafka_reaches_the_order_room(kafka_deploy: Deploy) -> None:
    d = await kafka_deploy(2)
    customer, porter, stranger = uid("cust"), uid("porter"), uid("cust")
    order_id = await d.order(customer, porter)
    c = await d.connect(customer, "customer", instance=0)
    p = await d.connect(porter, "porter", instance=1)
    s = await d.connect(stranger, "customer", instance=0)
    await d.subscribe(c, order_id)
    await d.subscribe(p, order_id)

    message = {
        "orderId": order_id,
        "messageId": "m-1",
        "senderId": "support-7",
        "senderRole": "admin",
        "text": "We are on it",
        "sentAt": "2026-01-01T10:00:00Z",
    }
    await d.produce("chatEvents", "chat.message.sent", message, key=order_id)
    for client in (c, p):
        got = without_recovery(await client.next("chat:message", timeout=20))
        assert got == {**message, "clientMessageId": None}
    await asyncio.sleep(QUIET)
    assert s.pending("chat:message") == []


async def test_order_access_from_kafka_authorizes_subscriptions(kafka_deploy: Deploy) -> None:
    d = await kafka_deploy(2)
    customer, porter, intruder = uid("cust"), uid("porter"), uid("cust")
    order_id = await d.order(customer)
    c = await d.connect(customer, "customer", instance=1)
    await d.subscribe(c, order_id)  # order.created made the customer a member
    p = await d.connect(porter, "porter", instance=0)
    ack = await p.call("order:subscribe", {"orderId": order_id})
    assert ack["error"]["code"] == "FORBIDDEN"  # not assigned yet
    await d.produce("orderEvents", "order.assigned", {"orderId": order_id, "porterId": porter}, key=order_id)

    async def assigned() -> bool:
        return bool((await p.call("order:subscribe", {"orderId": order_id}))["ok"])

    await eventually(assigned, within=20, what="porter authorized by order.assigned")
    i = await d.connect(intruder, "customer", instance=0)
    assert (await i.call("order:subscribe", {"orderId": order_id}))["error"]["code"] == "FORBIDDEN"
