"""A scripted session over two instances, then a scrape of /metrics on each."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.integration.protection.conftest import Stack, scrape, uid
from tests.support.gateway_fixtures import mint_token
from tests.support.sio import ConnectRefused

pytestmark = pytest.mark.integration

SEED = {
    "realtime_active_connections": {"namespace"},
    "realtime_messages_received_total": {"namespace", "event"},
    "realtime_messages_sent_total": {"namespace", "event"},
    "realtime_location_updates_total": set(),
    "realtime_fanout_latency_seconds_bucket": set(),
    "realtime_authentication_errors_total": {"reason"},
    "realtime_redis_hits_total": {"operation"},
}


async def test_scrape_after_a_session_shows_the_seed_metrics(stack: Stack) -> None:
    a, b = stack.start("m-a"), stack.start("m-b")
    customer, porter, admin = uid("cust"), uid("porter"), uid("admin")
    order = await stack.order(customer, porter)
    c = await stack.connect(a, customer, "customer")
    ad = await stack.connect(a, admin, "admin")
    p = await stack.connect(b, porter, "porter")
    for client in (c, ad, p):
        assert (await client.call("order:subscribe", {"orderId": order}))["ok"] is True
    for i in range(3):
        ack = await p.call(
            "location:update", {"lat": 52.5 + i / 1000, "lng": 13.4, "timestamp": int(time.time() * 1000)}
        )
        assert ack["ok"] is True
        for watcher in (c, ad):
            assert (await watcher.next("porter:location"))["orderId"] == order
    with pytest.raises(ConnectRefused):
        await stack.client(a, "/client").connect(token="not-a-jwt")
    with pytest.raises(ConnectRefused):
        await stack.client(a, "/client").connect(token=mint_token(uid("c"), "customer", ttl=-3600))
    with pytest.raises(ConnectRefused):
        await stack.client(a, "/porter").connect(token=mint_token(uid("c"), "customer"))

    ma, mb = scrape(a.url), scrape(b.url)
    for name, labels in SEED.items():
        for m in (ma, mb):
            assert name in m.samples, f"{name} missing"
            sets = m.label_sets(name) - {frozenset()} if labels else m.label_sets(name)
            assert sets <= {frozenset(labels)}, (name, sets)

    # Connections where they are.
    assert ma.value("realtime_active_connections", namespace="/client") == 1
    assert ma.value("realtime_active_connections", namespace="/admin") == 1
    assert ma.value("realtime_active_connections", namespace="/porter") == 0
    assert mb.value("realtime_active_connections", namespace="/porter") == 1
    # Received on the porter's instance, sent on the watchers' instance.
    assert mb.value("realtime_messages_received_total", namespace="/porter", event="location:update") == 3
    assert mb.value("realtime_location_updates_total") == 3
    assert ma.value("realtime_location_updates_total") == 0
    assert ma.value("realtime_messages_sent_total", namespace="/client", event="porter:location") == 3
    assert ma.value("realtime_messages_sent_total", namespace="/admin", event="porter:location") == 3
    assert ma.value("realtime_messages_sent_total", namespace="/client", event="session") == 1
    # The fan-out latency histogram observed the cross-instance deliveries, within reason: once per
    # room message on the delivering instance, however many namespaces it reached there.
    count = ma.value("realtime_fanout_latency_seconds_count")
    total = ma.value("realtime_fanout_latency_seconds_sum")
    assert count >= 3
    assert 0 < total / count < 1.0
    assert ma.value("realtime_fanout_latency_seconds_bucket", le="+Inf") == count
    assert ma.value("realtime_location_latency_seconds_count") >= 3
    # Refused credentials by reason.
    assert ma.value("realtime_authentication_errors_total", reason="AUTH_INVALID") == 1
    assert ma.value("realtime_authentication_errors_total", reason="AUTH_EXPIRED") == 1
    assert ma.value("realtime_authentication_errors_total", reason="FORBIDDEN_NAMESPACE") == 1
    assert ma.value("realtime_connection_attempts_total", namespace="/client") == 3
    # Redis was used by both, through commands and pipelines.
    for m in (ma, mb):
        assert m.value("realtime_redis_hits_total") > 0
        assert m.value("realtime_redis_hits_total", operation="pipeline") > 0
        assert m.value("realtime_redis_errors_total") == 0
        assert m.value("realtime_ready") == 1
        assert m.value("process_cpu_seconds_total") > 0
    # The location path's own connection is counted too: the porter's three updates were published.
    assert mb.value("realtime_redis_hits_total", operation="spublish") >= 3
    # A client leaving is counted with python-socketio's reason and its connection's lifetime.
    await c.disconnect()
    deadline = time.monotonic() + 5
    while scrape(a.url).value("realtime_disconnections_total", namespace="/client") < 1:
        assert time.monotonic() < deadline, "disconnect not counted"
        await asyncio.sleep(0.05)
    ma = scrape(a.url)
    (gone,) = [
        lbl for lbl, v in ma.samples["realtime_disconnections_total"] if v and lbl["namespace"] == "/client"
    ]
    assert gone["reason"] in ("client disconnect", "transport close"), gone
    assert ma.value("realtime_connection_duration_seconds_count", namespace="/client") == 1
    assert ma.value("realtime_active_connections", namespace="/client") == 0
    # No unbounded label values: ids never appear in the exposition.
    for ident in (customer, porter, admin, order):
        assert ident not in ma.text and ident not in mb.text
