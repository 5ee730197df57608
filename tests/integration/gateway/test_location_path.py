"""The location stream's specialised path (embedded mode) still applies every guard of the
generic path: the role check, validation with the model's error ack, the per-user rate limit
(synchronous form), the `error` event, metrics and guards added after the first update."""

from __future__ import annotations

from typing import Any

import pytest

from realtime_contract import Env
from tests.integration.gateway.helpers import location
from tests.integration.protection.conftest import ascrape, uid
from tests.support.gateway_fixtures import EmbeddedFactory, mint_token
from tests.support.sio import SioClient

pytestmark = pytest.mark.integration


def code(ack: dict[str, Any]) -> str:
    return "ok" if ack.get("ok") is True else str(ack["error"]["code"])


async def test_location_path_keeps_every_guard(embedded_factory: EmbeddedFactory) -> None:
    embedded = await embedded_factory(**{Env.RATE_LIMIT_LOCATION: "3/60s"})
    gateway = embedded.gateway
    customer, porter, order_id = uid("cust"), uid("porter"), uid("order")
    await gateway.stores.orders.record_created(order_id, customer)
    await gateway.stores.orders.record_assigned(order_id, porter)
    c = SioClient(embedded.url, "/client")
    p = SioClient(embedded.url, "/porter")
    await c.connect(token=mint_token(customer, "customer"))
    await p.connect(token=mint_token(porter, "porter"))
    try:
        assert (await c.call("order:subscribe", {"orderId": order_id}))["ok"] is True
        # Role: a customer may not send locations (its own bucket pays for the attempt).
        denied = await c.call("location:update", location())
        assert code(denied) == "FORBIDDEN"
        assert (await c.next("error"))["event"] == "location:update"
        # Validation: the model's message, as on the generic path.
        bad = await p.call("location:update", location(lat=91.0))
        assert code(bad) == "VALIDATION" and bad["error"]["message"].startswith("lat:")
        err_event = await p.next("error")
        assert err_event["code"] == "VALIDATION" and err_event["event"] == "location:update"
        # The bucket of 3: the refused update above took one token (the guard runs first).
        acks = [await p.call("location:update", location(lat=float(i))) for i in range(3)]
        assert [code(a) for a in acks] == ["ok", "ok", "RATE_LIMITED"]
        assert 0 < acks[2]["error"]["retryAfterMs"] <= 20_000
        assert (await p.next("error"))["code"] == "RATE_LIMITED"
        delivered = [await c.next("porter:location") for _ in range(2)]
        assert [d["lat"] for d in delivered] == [0.0, 1.0]
        assert c.pending("porter:location") == []

        # A guard added after the stream started is applied from the next update on.
        async def closed(conn: Any, event: str, data: Any) -> dict[str, Any] | None:
            return {"ok": False, "error": {"code": "FORBIDDEN", "message": "closed"}}

        gateway.handlers.event_guards.append(closed)
        gateway.handlers.event_guards.pop(0)  # without the rate limit, only the new guard refuses
        assert code(await p.call("location:update", location())) == "FORBIDDEN"

        m = await ascrape(embedded.url)
        assert m.value("realtime_rate_limited_total", **{"class": "location"}) == 1
        assert m.value("realtime_location_updates_total") == 2
        assert m.value("realtime_messages_received_total", namespace="/porter", event="location:update") == 5
        assert m.value("realtime_messages_sent_total", namespace="/client", event="porter:location") == 2
        assert m.value("realtime_location_latency_seconds_count") == 2
        assert m.value("realtime_fanout_latency_seconds_count") >= 2
        assert 0 <= m.value("realtime_location_latency_seconds_sum") < 5
    finally:
        await c.disconnect()
        await p.disconnect()
