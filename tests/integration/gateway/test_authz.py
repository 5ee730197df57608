"""The authorization matrix: 3 roles x subscribe own/other/unknown order, location update, namespace."""

from __future__ import annotations

import pytest

from tests.integration.gateway.conftest import Deployer, uid
from tests.integration.gateway.helpers import location
from tests.support.gateway_fixtures import mint_token
from tests.support.sio import ConnectRefused

pytestmark = pytest.mark.integration


def code(ack: dict[str, object]) -> str:
    if ack.get("ok") is True:
        return "ok"
    error = ack["error"]
    assert isinstance(error, dict)
    return str(error["code"])


async def test_subscribe_and_location_matrix(deployer: Deployer, single_kind: str) -> None:
    d = await deployer(single_kind)
    customer, porter, admin = uid("cust"), uid("porter"), uid("admin")
    own = await d.order(customer, porter)
    other = await d.order(uid("cust"), uid("porter"))
    created_only = await d.order(uid("cust"))  # no porter assigned yet
    unknown = uid("order")
    clients = {
        "customer": await d.connect(customer, "customer"),
        "porter": await d.connect(porter, "porter"),
        "admin": await d.connect(admin, "admin"),
    }
    expected = {
        ("customer", "own"): "ok",
        ("customer", "other"): "FORBIDDEN",
        ("customer", "unknown"): "NOT_FOUND",
        ("porter", "own"): "ok",
        ("porter", "other"): "FORBIDDEN",
        ("porter", "unassigned"): "FORBIDDEN",
        ("porter", "unknown"): "NOT_FOUND",
        ("admin", "own"): "ok",
        ("admin", "other"): "ok",
        ("admin", "unknown"): "NOT_FOUND",
        ("customer", "location"): "FORBIDDEN",
        ("porter", "location"): "ok",
        ("admin", "location"): "FORBIDDEN",
    }
    orders = {"own": own, "other": other, "unknown": unknown, "unassigned": created_only}
    actual = {}
    for role, what in expected:
        client = clients[role]
        if what == "location":
            ack = await client.call("location:update", location())
        else:
            ack = await client.call("order:subscribe", {"orderId": orders[what]})
        actual[(role, what)] = code(ack)
    assert actual == expected

    # Each refusal was mirrored by an `error` event naming the event.
    errors = clients["customer"].pending("error")
    assert {"code": "FORBIDDEN", "event": "order:subscribe"}.items() <= errors[0].items()
    assert [e["code"] for e in errors] == ["FORBIDDEN", "NOT_FOUND", "FORBIDDEN"]


async def test_refused_subscription_changes_nothing(deployer: Deployer, single_kind: str) -> None:
    d = await deployer(single_kind)
    customer, other_customer, other_porter = uid("cust"), uid("cust"), uid("porter")
    other = await d.order(other_customer, other_porter)
    intruder = await d.connect(customer, "customer")
    assert code(await intruder.call("order:subscribe", {"orderId": other})) == "FORBIDDEN"
    legit = await d.connect(other_customer, "customer")
    assert code(await legit.call("order:subscribe", {"orderId": other})) == "ok"
    p = await d.connect(other_porter, "porter")
    assert code(await p.call("location:update", location(lat=3.0))) == "ok"
    assert (await legit.next("porter:location"))["lat"] == 3.0
    assert intruder.pending("porter:location") == []
    if d.redis is not None:
        members = await d.redis.smembers(f"order:subscription:{{{other}}}")
        assert members == {legit.sio.get_sid("/client")}


WRONG_NAMESPACES = [
    ("customer", "/porter"),
    ("customer", "/admin"),
    ("porter", "/client"),
    ("porter", "/admin"),
    ("admin", "/client"),
    ("admin", "/porter"),
    ("service", "/client"),
]


async def test_wrong_namespace_is_refused(deployer: Deployer, single_kind: str) -> None:
    d = await deployer(single_kind)
    codes = {}
    for role, namespace in WRONG_NAMESPACES:
        client = await d.client(namespace)
        try:
            await client.connect(token=mint_token(uid(role), role))
            codes[(role, namespace)] = "connected"
        except ConnectRefused as refused:
            codes[(role, namespace)] = str(refused.code)
    assert codes == dict.fromkeys(WRONG_NAMESPACES, "FORBIDDEN_NAMESPACE")
