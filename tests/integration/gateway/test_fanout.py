"""Cross-instance fan-out over per-room sharded pub/sub (standalone Redis and Redis Cluster)."""

from __future__ import annotations

import pytest

from tests.integration.gateway.conftest import Deployer, uid
from tests.integration.gateway.helpers import location
from tests.support.deploy import eventually

pytestmark = pytest.mark.integration


async def test_location_crosses_instances_and_reaches_only_the_order_room(
    deployer: Deployer, multi_kind: str
) -> None:
    d = await deployer(multi_kind, instances=3)
    customer, other_customer, porter = uid("cust"), uid("cust"), uid("porter")
    order_id = await d.order(customer, porter)
    other_order = await d.order(other_customer, porter)

    # A: the order's customer. B: the porter. C: only the customer of another order.
    c = await d.connect(customer, "customer", instance=0)
    assert (await c.call("order:subscribe", {"orderId": order_id}))["ok"] is True
    other = await d.connect(other_customer, "customer", instance=2)
    assert (await other.call("order:subscribe", {"orderId": other_order}))["ok"] is True
    p = await d.connect(porter, "porter", instance=1)
    # The porter coming online is announced to their order rooms (porter:presence); count after it.
    assert (await other.next("porter:presence", timeout=5))["online"] is True
    before_c = d.fanout(2)["received"]

    # The porter has both orders: each customer gets the update for their order only.
    assert await p.call("location:update", location(lat=10.5)) == {"ok": True, "orders": 2}
    mine = await c.next("porter:location", timeout=5)
    assert (mine["orderId"], mine["porterId"], mine["lat"]) == (order_id, porter, 10.5)
    theirs = await other.next("porter:location", timeout=5)
    assert theirs["orderId"] == other_order
    assert other.pending("porter:location") == [] and c.pending("porter:location") == []

    # Instance C holds no member of the order room: it never subscribed to that channel and
    # got exactly one pub/sub message (the other order's), none for this order.
    stats_c = d.fanout(2)
    assert f"order:{order_id}" not in stats_c["rooms"]
    assert f"order:{other_order}" in stats_c["rooms"]
    assert stats_c["received"] - before_c == 1
    # Instance A, which has a member, subscribed to the room; Redis agrees: one subscriber.
    assert f"order:{order_id}" in d.fanout(0)["rooms"]
    assert await d.room_subscribers(f"order:{order_id}") == 1


async def test_idle_instance_receives_nothing(deployer: Deployer, multi_kind: str) -> None:
    d = await deployer(multi_kind, instances=3)
    customer, porter = uid("cust"), uid("porter")
    order_id = await d.order(customer, porter)
    c = await d.connect(customer, "customer", instance=0)
    assert (await c.call("order:subscribe", {"orderId": order_id}))["ok"] is True
    p = await d.connect(porter, "porter", instance=1)
    for i in range(5):
        assert (await p.call("location:update", location(lat=float(i))))["ok"] is True
    for i in range(5):
        assert (await c.next("porter:location"))["lat"] == float(i)  # in order
    assert d.fanout(0)["received"] >= 5
    stats = d.fanout(2)
    assert stats["received"] == 0 and stats["channels"] == 0


async def test_last_member_leaving_unsubscribes_the_channel(deployer: Deployer, multi_kind: str) -> None:
    d = await deployer(multi_kind, instances=2)
    customer, porter = uid("cust"), uid("porter")
    order_id = await d.order(customer, porter)
    c1 = await d.connect(customer, "customer", instance=0)
    c2 = await d.connect(customer, "customer", instance=0)
    for c in (c1, c2):
        assert (await c.call("order:subscribe", {"orderId": order_id}))["ok"] is True
    room = f"order:{order_id}"
    assert room in d.fanout(0)["rooms"]
    assert (await c1.call("order:unsubscribe", {"orderId": order_id}))["ok"] is True
    assert room in d.fanout(0)["rooms"]  # c2 is still a member
    await c2.disconnect()

    async def gone() -> bool:
        return room not in d.fanout(0)["rooms"]

    await eventually(gone, within=5, what="the room channel to be unsubscribed")
    # Redis has no subscriber left for the room, so nothing published there can reach instance A.
    assert await d.room_subscribers(room) == 0
    # Re-subscribing works again and delivers.
    assert (await c1.call("order:subscribe", {"orderId": order_id}))["ok"] is True
    assert await d.room_subscribers(room) == 1
    p = await d.connect(porter, "porter", instance=1)
    assert (await p.call("location:update", location(lat=1.25)))["ok"] is True
    assert (await c1.next("porter:location"))["lat"] == 1.25
