"""Reconnect tokens: presented to any instance, they restore the user and the socket's subscriptions."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.gateway.conftest import Deployer, uid
from tests.integration.gateway.helpers import location
from tests.support.sio import ConnectRefused, SioClient

pytestmark = pytest.mark.integration


async def _reconnect_flow(d: object, instances: tuple[int, int]) -> None:
    from tests.integration.gateway.conftest import Deployment

    assert isinstance(d, Deployment)
    first, second = instances
    customer, porter = uid("cust"), uid("porter")
    order_id = await d.order(customer, porter)
    keep_out = await d.order(customer, uid("porter"))  # subscribed, then unsubscribed
    c = await d.connect(customer, "customer", instance=first)
    token = (await c.next("session"))["reconnectToken"]
    assert (await c.call("order:subscribe", {"orderId": order_id}))["ok"] is True
    assert (await c.call("order:subscribe", {"orderId": keep_out}))["ok"] is True
    assert (await c.call("order:unsubscribe", {"orderId": keep_out}))["ok"] is True
    await c.disconnect()

    again = await d.client("/client", instance=second)
    await again.connect(auth={"reconnectToken": token})
    session = await again.next("session")
    assert session["userId"] == customer and session["role"] == "customer"
    assert session["subscriptions"] == [order_id]
    assert session["reconnectToken"] != token  # single use, rotated

    p = await d.connect(porter, "porter", instance=first)
    assert (await p.call("location:update", location(lat=7.5)))["ok"] is True
    event = await again.next("porter:location")  # no order:subscribe on the new socket
    assert (event["orderId"], event["lat"]) == (order_id, 7.5)

    # The used token is spent; the rotated one restores again (chains across reconnects).
    spent = await d.client("/client", instance=second)
    with pytest.raises(ConnectRefused) as refused:
        await spent.connect(auth={"reconnectToken": token})
    assert refused.value.code == "AUTH_INVALID"
    await again.disconnect()
    third = await d.client("/client", instance=first)
    await third.connect(auth={"reconnectToken": session["reconnectToken"]})
    assert (await third.next("session"))["subscriptions"] == [order_id]


async def test_reconnect_on_another_instance_restores_subscriptions(
    deployer: Deployer, multi_kind: str
) -> None:
    d = await deployer(multi_kind, instances=2)
    await _reconnect_flow(d, (0, 1))


async def test_reconnect_in_embedded_mode(deployer: Deployer) -> None:
    d = await deployer("embedded")
    await _reconnect_flow(d, (0, 0))


async def test_reconnect_token_refusals(deployer: Deployer, single_kind: str) -> None:
    d = await deployer(single_kind)
    customer = uid("cust")
    c = await d.connect(customer, "customer")
    token = (await c.next("session"))["reconnectToken"]
    results = {}
    for name, namespace, auth in [
        ("unknown token", "/client", {"reconnectToken": "x" * 43}),
        ("oversized token", "/client", {"reconnectToken": "x" * 5000}),
        ("other namespace", "/porter", {"reconnectToken": token}),
    ]:
        client: SioClient = await d.client(namespace)
        try:
            await client.connect(auth=auth)
            results[name] = "connected"
        except ConnectRefused as refused:
            results[name] = str(refused.code)
    assert results == {
        "unknown token": "AUTH_INVALID",
        "oversized token": "AUTH_INVALID",
        "other namespace": "FORBIDDEN_NAMESPACE",
    }
    # Presenting it on the wrong namespace did not spend it.
    await c.disconnect()
    again = await d.client("/client")
    await again.connect(auth={"reconnectToken": token})
    assert (await again.next("session"))["userId"] == customer


async def test_reconnect_reauthorizes_subscriptions(deployer: Deployer, single_kind: str) -> None:
    """Access lost while away (order reassigned) is not restored."""
    d = await deployer(single_kind)
    porter = uid("porter")
    order_id = await d.order(uid("cust"), porter)
    p = await d.connect(porter, "porter")
    token = (await p.next("session"))["reconnectToken"]
    assert (await p.call("order:subscribe", {"orderId": order_id}))["ok"] is True
    await p.disconnect()
    await d.orders.record_assigned(order_id, uid("porter"))
    again = await d.client("/porter")
    await again.connect(auth={"reconnectToken": token})
    assert (await again.next("session"))["subscriptions"] == []


async def test_ttls_are_renewed_while_connected(deployer: Deployer, single_kind: str) -> None:
    """A socket that lives longer than the reconnect-token TTL keeps a working token and its keys."""
    from realtime_contract import Env
    from tests.support.deploy import eventually

    d = await deployer(single_kind, **{"RTG_RECONNECT_TOKEN_TTL_SECONDS": "10", Env.LOG_LEVEL: "info"})
    customer, porter = uid("cust"), uid("porter")
    order_id = await d.order(customer, porter)
    c = await d.connect(customer, "customer")
    session = await c.next("session")
    assert session["reconnectTokenExpiresIn"] == 10
    assert (await c.call("order:subscribe", {"orderId": order_id}))["ok"] is True
    token = session["reconnectToken"]
    started = asyncio.get_running_loop().time()

    if d.redis is not None:
        key = f"reconnect:token:{{{token}}}"

        async def renewed() -> bool:
            # The keepalive (every 10/3 s) pushed the TTL back up after time ran it down.
            return asyncio.get_running_loop().time() - started > 5 and await d.redis.ttl(key) > 8

        await eventually(renewed, within=15, what="the reconnect token TTL to be renewed")

    async def outlived() -> bool:
        return asyncio.get_running_loop().time() - started > 11

    await eventually(outlived, within=20, what="the original token lifetime to pass")
    await c.disconnect()
    again = await d.client("/client")
    await again.connect(auth={"reconnectToken": token})
    assert (await again.next("session"))["subscriptions"] == [order_id]
