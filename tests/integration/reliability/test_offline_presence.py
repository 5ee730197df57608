"""Offline queue (notifications and job offers kept while the user has no socket) and presence
across instances (multi-device, last seen, porter presence announced to the order room)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from realtime_gateway.ingest.envelope import build_envelope
from realtime_gateway.offline.queue import queue_key
from tests.integration.reliability.conftest import (
    Deployer,
    connect_logging,
    notification_event,
    post_events,
    uid,
)
from tests.support.deploy import eventually

pytestmark = pytest.mark.integration

QUIET = 0.7


@pytest.mark.parametrize("kind", ["embedded", "redis", "cluster"])
async def test_user_offline_during_five_notifications_gets_all_five_once(
    deployer: Deployer, kind: str
) -> None:
    d = await deployer(kind, instances=1 if kind == "embedded" else 2)
    user, porter = uid("cust"), uid("porter")
    await post_events(d.urls[0], [notification_event(user, n) for n in range(5)])
    offer = build_envelope(
        "job.offer.created",
        {
            "offerId": uid("offer"),
            "orderId": uid("order"),
            "porterId": porter,
            "expiresAt": "2099-01-01T00:00:00Z",
        },
    )
    await post_events(d.urls[0], [offer])

    c = await connect_logging(d, user, "customer", instance=len(d.urls) - 1)
    got = [await c.next("notification") for _ in range(5)]
    assert [n["notificationId"] for n in got] == [f"n-{n}" for n in range(5)]
    assert got[0] == {"notificationId": "n-0", "title": "t0", "body": "b", "data": {"n": 0}}
    p = await connect_logging(d, porter, "porter")
    assert (await p.next("job:offer"))["offerId"] == offer["payload"]["offerId"]
    await asyncio.sleep(QUIET)
    assert c.pending("notification") == []
    if d.redis is not None:  # acknowledged deliveries are removed from the queue

        async def emptied() -> bool:
            return bool(await d.redis.exists(queue_key(user), queue_key(porter)) == 0)

        await eventually(emptied, within=5, what="offline queues emptied by the acks")

    # Online now: the next notification is live, not queued; a later reconnect gets nothing again.
    await post_events(d.urls[0], [notification_event(user, 5)])
    assert (await c.next("notification"))["notificationId"] == "n-5"
    await c.disconnect()
    again = await connect_logging(d, user, "customer")
    await asyncio.sleep(QUIET)
    assert again.pending("notification") == []


async def test_porter_presence_two_devices_across_instances(deployer: Deployer) -> None:
    d = await deployer("redis", instances=3)
    porter, customer, admin = uid("porter"), uid("cust"), uid("admin")
    order_id = await d.order(customer, porter)
    c = await connect_logging(d, customer, "customer", instance=2)
    assert (await c.call("order:subscribe", {"orderId": order_id}))["ok"] is True
    admins = [await connect_logging(d, admin, "admin", instance=i) for i in range(3)]

    async def presence_everywhere() -> list[dict[str, Any]]:
        out = []
        for a in admins:
            ack = await a.call("presence:query", {"userIds": [porter]})
            assert ack["ok"] is True, ack
            out.append(ack["presence"][porter])
        return out

    phone = await connect_logging(d, porter, "porter", instance=0)
    came = await c.next("porter:presence")
    assert (came["orderId"], came["porterId"], came["online"]) == (order_id, porter, True)
    tablet = await connect_logging(d, porter, "porter", instance=1)

    async def devices(n: int) -> bool:
        return all(p["devices"] == n and p["online"] is (n > 0) for p in await presence_everywhere())

    await eventually(lambda: devices(2), within=5, what="two devices online on every instance")
    await phone.disconnect()
    await eventually(lambda: devices(1), within=5, what="one device left, still online")
    assert c.pending("porter:presence") == []  # closing one device is no presence change
    await tablet.disconnect()
    await eventually(lambda: devices(0), within=5, what="offline everywhere")
    views = await presence_everywhere()
    last_seen = {v["lastSeen"] for v in views}
    assert len(last_seen) == 1 and isinstance(next(iter(last_seen)), int)
    went = await c.next("porter:presence")
    assert went["online"] is False and went["lastSeen"] == next(iter(last_seen))
    assert isinstance(went["offset"], int) and went["offset"] == came["offset"] + 1

    # Only admins may ask.
    denied = await c.call("presence:query", {"userIds": [porter]})
    assert denied["ok"] is False and denied["error"]["code"] == "FORBIDDEN"
