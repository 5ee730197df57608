"""First contact: connect, session, subscribe, location delivery on one instance."""

from __future__ import annotations

import pytest

from tests.integration.gateway.conftest import Deployer, uid
from tests.integration.gateway.helpers import location

pytestmark = pytest.mark.integration


async def test_customer_receives_porter_location(deployer: Deployer, single_kind: str) -> None:
    d = await deployer(single_kind)
    customer, porter = uid("cust"), uid("porter")
    order_id = await d.order(customer, porter)
    c = await d.connect(customer, "customer")
    session = await c.next("session")
    assert session["userId"] == customer and session["role"] == "customer"
    assert isinstance(session["reconnectToken"], str) and session["reconnectTokenExpiresIn"] > 0
    assert await c.call("order:subscribe", {"orderId": order_id}) == {"ok": True, "orderId": order_id}
    p = await d.connect(porter, "porter")
    ack = await p.call("location:update", location())
    assert ack == {"ok": True, "orders": 1}
    event = await c.next("porter:location")
    assert event["orderId"] == order_id and event["porterId"] == porter and event["lat"] == 52.52
