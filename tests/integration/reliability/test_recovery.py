"""Missed-message recovery per order room, on the embedded mode and across two Redis-backed
instances (the client comes back on the other instance with its reconnect token)."""

from __future__ import annotations

import asyncio

import pytest

from realtime_gateway.recovery.history import HISTORY_SIZE
from tests.integration.reliability.conftest import (
    Deployer,
    connect_logging,
    post_events,
    status_event,
    uid,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("kind", ["embedded", "redis", "cluster"])
async def test_reconnect_replays_missed_events_in_order_then_live(deployer: Deployer, kind: str) -> None:
    d = await deployer(kind, instances=1 if kind == "embedded" else 2)
    back = len(d.urls) - 1  # the instance the client comes back to
    customer = uid("cust")
    order_id = await d.order(customer)
    c = await connect_logging(d, customer, "customer", instance=0)
    assert (await c.call("order:subscribe", {"orderId": order_id}))["ok"] is True
    token = (await c.next("session"))["reconnectToken"]

    await post_events(d.urls[0], [status_event(order_id, 1)])
    first = await c.next("order:status")
    assert first["seq"] == 1 and first["offset"] == 1 and isinstance(first["epoch"], str)
    await c.disconnect()

    await post_events(d.urls[0], [status_event(order_id, seq) for seq in range(2, 7)])
    recover = {order_id: {"offset": first["offset"], "epoch": first["epoch"]}}
    c2 = await connect_logging(
        d, customer, "customer", back, auth={"reconnectToken": token, "recover": recover}
    )
    recovered = await c2.next("recovered", timeout=10)
    assert recovered == {"orderId": order_id, "recovered": True, "epoch": first["epoch"], "offset": 6}
    # the missed events came first, in order, each once, before "recovered"
    assert [(e, d_["seq"], d_["offset"]) for e, d_ in c2.events("order:status", "recovered")[:-1]] == [
        ("order:status", seq, seq) for seq in range(2, 7)
    ]
    session = await c2.next("session")
    assert session["subscriptions"] == [order_id]

    await post_events(d.urls[0], [status_event(order_id, 7)])
    live = None
    for _ in range(6):
        live = await c2.next("order:status")
    assert live is not None and (live["seq"], live["offset"]) == (7, 7)
    await asyncio.sleep(0.3)
    assert c2.pending("order:status") == []


async def test_recovery_beyond_the_window_or_epoch_is_refused(deployer: Deployer, single_kind: str) -> None:
    d = await deployer(single_kind)
    customer = uid("cust")
    order_id = await d.order(customer)
    c = await connect_logging(d, customer, "customer")
    assert (await c.call("order:subscribe", {"orderId": order_id}))["ok"] is True
    token = (await c.next("session"))["reconnectToken"]
    await post_events(d.urls[0], [status_event(order_id, 1)])
    first = await c.next("order:status")
    await c.disconnect()

    # More events than the history keeps: offset 2 is gone, so offset 1 cannot be continued.
    await post_events(d.urls[0], [status_event(order_id, seq) for seq in range(2, HISTORY_SIZE + 3)])
    recover = {order_id: {"offset": first["offset"], "epoch": first["epoch"]}}
    c2 = await connect_logging(d, customer, "customer", auth={"reconnectToken": token, "recover": recover})
    result = await c2.next("recovered", timeout=10)
    assert result["recovered"] is False and result["offset"] == HISTORY_SIZE + 2
    assert c2.pending("order:status") == []  # never a partial replay with a silent gap
    token = (await c2.next("session"))["reconnectToken"]
    await c2.disconnect()

    # A wrong epoch (history lost and restarted) is refused too.
    bad = {order_id: {"offset": HISTORY_SIZE + 2, "epoch": "not-the-epoch"}}
    c3 = await connect_logging(d, customer, "customer", auth={"reconnectToken": token, "recover": bad})
    assert (await c3.next("recovered", timeout=10))["recovered"] is False
    # An order the socket is not subscribed to cannot be recovered.
    other = await d.order(uid("cust"))
    token = (await c3.next("session"))["reconnectToken"]
    await c3.disconnect()
    c4 = await connect_logging(
        d, customer, "customer", auth={"reconnectToken": token, "recover": {other: {"offset": 0}}}
    )
    assert await c4.next("recovered", timeout=10) == {"orderId": other, "recovered": False}


async def test_chat_history_members_only(deployer: Deployer, single_kind: str) -> None:
    d = await deployer(single_kind)
    customer, porter, stranger, admin = uid("cust"), uid("porter"), uid("cust"), uid("admin")
    order_id = await d.order(customer, porter)
    c = await connect_logging(d, customer, "customer")
    p = await connect_logging(d, porter, "porter")
    for i in range(5):
        sender = c if i % 2 == 0 else p
        ack = await sender.call(
            "chat:message:send", {"orderId": order_id, "text": f"m{i}", "clientMessageId": f"c{i}"}
        )
        assert ack["ok"] is True, ack
    await post_events(d.urls[0], [status_event(order_id, 1)])  # not a chat message: never in chat:history

    page = await p.call("chat:history", {"orderId": order_id, "limit": 3})
    assert page["ok"] is True and [m["text"] for m in page["messages"]] == ["m2", "m3", "m4"]
    assert page["hasMore"] is True
    older = await c.call("chat:history", {"orderId": order_id, "before": page["messages"][0]["offset"]})
    assert [m["text"] for m in older["messages"]] == ["m0", "m1"] and older["hasMore"] is False

    s = await connect_logging(d, stranger, "customer")
    denied = await s.call("chat:history", {"orderId": order_id})
    assert denied["ok"] is False and denied["error"]["code"] == "FORBIDDEN"
    a = await connect_logging(d, admin, "admin")
    assert (await a.call("chat:history", {"orderId": order_id}))["error"]["code"] == "FORBIDDEN"
    bad = await c.call("chat:history", {"orderId": order_id, "limit": 0})
    assert bad["error"]["code"] == "VALIDATION"
