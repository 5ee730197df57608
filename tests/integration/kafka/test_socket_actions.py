"""Chat, job offers, typing and location sampling: client events that go through Kafka (or Redis)
and come back to the right sockets, on two gateway instances."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from tests.integration.kafka.conftest import Deploy, uid

pytestmark = pytest.mark.integration

QUIET = 0.7


def iso_in(ms: int) -> str:
    """An ISO 8601 UTC time ``ms`` from now, with milliseconds."""
    at = time.time() + ms / 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"


@pytest.mark.parametrize("redis", ["standalone", "cluster"])
async def test_chat_reaches_both_members_once_and_is_on_kafka(kafka_deploy: Deploy, redis: str) -> None:
    d = await kafka_deploy(2, redis=redis)
    customer, _, order_id, c, p = await d.order_members()

    ack = await c.call(
        "chat:message:send", {"orderId": order_id, "text": "Ring twice", "clientMessageId": "cm-1"}
    )
    assert ack["ok"] is True, ack
    for client in (c, p):
        got = await client.next("chat:message", timeout=20)
        assert got["messageId"] == ack["messageId"]
        assert (got["orderId"], got["senderId"], got["senderRole"], got["text"], got["clientMessageId"]) == (
            order_id,
            customer,
            "customer",
            "Ring twice",
            "cm-1",
        )
    [record] = await d.records("chatEvents", at_least=1)
    assert record.key == order_id.encode()
    envelope = orjson.loads(record.value)
    headers = dict(record.headers)
    assert headers["correlation-id"].decode() == envelope["correlationId"]
    assert headers["traceparent"].startswith(b"00-")
    assert (envelope["type"], envelope["payload"]["messageId"]) == ("chat.message.sent", ack["messageId"])

    # A retry with the same clientMessageId: the same answer, no second message anywhere.
    again = await c.call(
        "chat:message:send", {"orderId": order_id, "text": "Ring twice", "clientMessageId": "cm-1"}
    )
    assert again == {"ok": True, "messageId": ack["messageId"], "duplicate": True}
    await asyncio.sleep(QUIET)
    assert c.pending("chat:message") == [] and p.pending("chat:message") == []
    assert len(await d.records("chatEvents")) == 1


async def test_chat_refuses_non_members_and_bad_text(kafka_deploy: Deploy) -> None:
    d = await kafka_deploy(1)
    customer, porter, stranger = uid("cust"), uid("porter"), uid("cust")
    order_id = await d.order(customer, porter)
    c = await d.connect(customer, "customer")
    await d.subscribe(c, order_id)
    s = await d.connect(stranger, "customer")
    other_porter = await d.connect(uid("porter"), "porter")
    admin = await d.connect(uid("admin"), "admin")

    for client in (s, other_porter, admin):
        ack = await client.call(
            "chat:message:send", {"orderId": order_id, "text": "hi", "clientMessageId": "x"}
        )
        assert ack["ok"] is False and ack["error"]["code"] == "FORBIDDEN", ack
        assert (await client.next("error"))["event"] == "chat:message:send"
    for bad in (
        {"orderId": order_id, "text": "", "clientMessageId": "x"},
        {"orderId": order_id, "text": "x" * 2001, "clientMessageId": "x"},
        {"orderId": order_id, "text": "hi"},
        "not an object",
    ):
        ack = await c.call("chat:message:send", bad)
        assert ack["error"]["code"] == "VALIDATION", (bad, ack)
    ok = await c.call(
        "chat:message:send", {"orderId": order_id, "text": "x" * 2000, "clientMessageId": "long"}
    )
    assert ok["ok"] is True
    assert (await c.next("chat:message", timeout=20))["text"] == "x" * 2000
    assert [
        orjson.loads(r.value)["payload"]["senderId"] for r in await d.records("chatEvents", at_least=1)
    ] == [customer]


@pytest.mark.parametrize("redis", ["standalone", "cluster"])
async def test_job_offer_race_one_winner_then_expired(kafka_deploy: Deploy, redis: str) -> None:
    d = await kafka_deploy(2, redis=redis)
    customer = uid("cust")
    order_id = await d.order(customer)
    porters = [uid("porter") for _ in range(3)]
    offer_id = uid("offer")
    devices = [
        await d.connect(porters[0], "porter", instance=0),
        await d.connect(porters[0], "porter", instance=1),
        await d.connect(porters[1], "porter", instance=0),
        await d.connect(porters[2], "porter", instance=1),
    ]
    # The same offer made to three porters (one event each); the first porter has two devices.
    for porter in porters:
        await d.produce(
            "orderEvents",
            "job.offer.created",
            {"offerId": offer_id, "orderId": order_id, "porterId": porter, "expiresAt": iso_in(60_000)},
            key=order_id,
        )
    for device in devices:
        assert (await device.next("job:offer", timeout=20))["offerId"] == offer_id
    await asyncio.sleep(0.3)  # let every device's second copy (if any) arrive before draining
    for device in devices:
        assert device.pending("job:offer") == []

    acks = await asyncio.gather(
        *(device.call("job:offer:accept", {"offerId": offer_id}) for device in devices)
    )
    winners = [i for i, ack in enumerate(acks) if ack["ok"]]
    assert len(winners) == 1, acks
    assert acks[winners[0]] == {"ok": True, "offerId": offer_id, "orderId": order_id}
    assert sorted(ack["error"]["code"] for ack in acks if not ack["ok"]) == ["CONFLICT"] * 3

    # Everyone else learns the offer is closed (the winner's other device says "accepted").
    winner = winners[0]
    winner_porter = porters[0] if winner in (0, 1) else porters[winner - 1]
    for i, device in enumerate(devices):
        if i == winner:
            continue
        closed = await device.next("job:offer:closed", timeout=10)
        same_porter = (winner_porter == porters[0]) and i in (0, 1)
        assert closed == {"offerId": offer_id, "reason": "accepted" if same_porter else "taken"}
    await asyncio.sleep(QUIET)
    assert devices[winner].pending("job:offer:closed") == []

    accepted = await d.records("porterEvents", event_type="job.offer.accepted", at_least=1)
    assert len(accepted) == 1
    record = accepted[0]
    assert record.key == winner_porter.encode()
    assert orjson.loads(record.value)["payload"] == {
        "offerId": offer_id,
        "orderId": order_id,
        "porterId": winner_porter,
    }

    # A late offer: accepting after expiresAt is EXPIRED and produces nothing.
    late_offer = uid("offer")
    late_porter = porters[1]
    await d.produce(
        "orderEvents",
        "job.offer.created",
        {"offerId": late_offer, "orderId": order_id, "porterId": late_porter, "expiresAt": iso_in(1_500)},
        key=order_id,
    )
    late_device = devices[2]
    assert (await late_device.next("job:offer", timeout=20))["offerId"] == late_offer
    await asyncio.sleep(1.6)  # past expiresAt: the condition under test is time itself
    ack = await late_device.call("job:offer:accept", {"offerId": late_offer})
    assert ack["ok"] is False and ack["error"]["code"] == "EXPIRED"
    stranger = await d.connect(uid("porter"), "porter", instance=0)
    ack = await stranger.call("job:offer:accept", {"offerId": offer_id})
    assert ack["error"]["code"] == "FORBIDDEN"
    assert (await stranger.call("job:offer:accept", {"offerId": "no-such-offer"}))["error"][
        "code"
    ] == "NOT_FOUND"
    assert len(await d.records("porterEvents", event_type="job.offer.accepted")) == 1


async def test_job_offer_reject_is_produced_and_closes_the_other_devices(kafka_deploy: Deploy) -> None:
    d = await kafka_deploy(2)
    order_id = await d.order(uid("cust"))
    porter, offer_id = uid("porter"), uid("offer")
    phone = await d.connect(porter, "porter", instance=0)
    tablet = await d.connect(porter, "porter", instance=1)
    await d.produce(
        "orderEvents",
        "job.offer.created",
        {"offerId": offer_id, "orderId": order_id, "porterId": porter, "expiresAt": iso_in(60_000)},
        key=order_id,
    )
    for device in (phone, tablet):
        await device.next("job:offer", timeout=20)
    ack = await phone.call("job:offer:reject", {"offerId": offer_id, "reason": "too far"})
    assert ack == {"ok": True, "offerId": offer_id, "orderId": order_id}
    assert await tablet.next("job:offer:closed", timeout=10) == {"offerId": offer_id, "reason": "rejected"}
    assert (await tablet.call("job:offer:accept", {"offerId": offer_id}))["error"]["code"] == "CONFLICT"
    [record] = await d.records("porterEvents", event_type="job.offer.rejected", at_least=1)
    assert record.key == porter.encode()
    assert orjson.loads(record.value)["payload"]["reason"] == "too far"


async def test_typing_goes_to_the_other_members_only_and_is_throttled(kafka_deploy: Deploy) -> None:
    d = await kafka_deploy(2)
    customer, porter, order_id, c, p = await d.order_members()
    watcher = await d.connect(uid("cust"), "customer", instance=0)  # not a member of the order

    assert await c.call("chat:typing", {"orderId": order_id}) == {"ok": True, "relayed": True}
    assert await p.next("chat:typing", timeout=10) == {
        "orderId": order_id,
        "userId": customer,
        "role": "customer",
    }
    # Within a second the same user's typing is dropped (not an error).
    assert await c.call("chat:typing", {"orderId": order_id}) == {"ok": True, "relayed": False}
    # The porter's own typing reaches the customer, not the porter.
    assert await p.call("chat:typing", {"orderId": order_id}) == {"ok": True, "relayed": True}
    assert (await c.next("chat:typing", timeout=10))["userId"] == porter
    await asyncio.sleep(QUIET)
    assert c.pending("chat:typing") == [] and p.pending("chat:typing") == []
    assert watcher.pending("chat:typing") == []
    assert (await watcher.call("chat:typing", {"orderId": order_id}))["error"]["code"] == "FORBIDDEN"
    # Never persisted: nothing on any topic, no chat record.
    assert await d.records("chatEvents") == []


@pytest.mark.parametrize("redis", ["standalone", "cluster"])
async def test_one_in_ten_location_updates_is_sampled_to_kafka(kafka_deploy: Deploy, redis: str) -> None:
    d = await kafka_deploy(2, redis=redis)
    porter = uid("porter")
    order_id = await d.order(uid("cust"), porter)
    p = await d.connect(porter, "porter", instance=0)
    await d.subscribe(p, order_id)  # the assignment has been consumed
    start = int(time.time() * 1000)
    for i in range(100):
        ack = await p.call(
            "location:update", {"lat": 52.0 + i / 1000, "lng": 13.0, "heading": 90.0, "timestamp": start + i}
        )
        assert ack["ok"] is True, ack
    samples = await d.records("porterEvents", event_type="porter.location.sampled", at_least=10)
    assert len(samples) == 10
    payloads = [orjson.loads(r.value)["payload"] for r in samples]
    assert all(r.key == porter.encode() for r in samples)
    assert sorted(pl["timestamp"] - start for pl in payloads) == list(range(9, 100, 10))
    assert all(pl["porterId"] == porter and pl["orderIds"] == [order_id] for pl in payloads)
    assert all(pl["lng"] == 13.0 and pl["heading"] == 90.0 for pl in payloads)
