from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from realtime_contract import Metric
from realtime_gateway.observability.metrics import (
    AUTH_REASONS,
    OTHER,
    RATE_CLASSES,
    REFUSAL_REASONS,
    GatewayMetrics,
)

pytestmark = pytest.mark.unit

SEED_LABELS = {
    "realtime_active_connections": {"namespace"},
    "realtime_messages_received": {"namespace", "event"},
    "realtime_messages_sent": {"namespace", "event"},
    "realtime_location_updates": set(),
    "realtime_fanout_latency_seconds": set(),
    "realtime_authentication_errors": {"reason"},
    "realtime_redis_hits": {"operation"},
}


def families(m: GatewayMetrics) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    body, ctype = m.render()
    assert ctype.startswith("text/plain")
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(body.decode()):
        out[fam.name] = [(s.name, dict(s.labels), s.value) for s in fam.samples]
    return out


def test_every_contract_metric_is_registered() -> None:
    m = GatewayMetrics(process_metrics=False)
    names = set(m.registry._names_to_collectors)
    for attr, name in vars(Metric).items():
        if attr.isupper():
            assert name in names, f"{attr}={name} is not exported"


def test_seed_metrics_have_the_seed_label_sets() -> None:
    m = GatewayMetrics(process_metrics=False)
    m.connected("/porter")
    m.received("/porter", "location:update")
    m.sent("/client", "porter:location", 2)
    m.location_updates.inc()
    m.fanout_latency.observe(0.004)
    m.auth_error("AUTH_EXPIRED")
    m.redis_op("hset")
    fams = families(m)
    for name, labels in SEED_LABELS.items():
        samples = fams[name]
        assert samples, name
        for sample_name, sample_labels, _ in samples:
            keys = set(sample_labels) - {"le"}
            assert keys == labels, (sample_name, sample_labels)
    assert ("realtime_active_connections", {"namespace": "/porter"}, 1.0) in fams[
        "realtime_active_connections"
    ]
    hist = {s[0]: s[2] for s in fams["realtime_fanout_latency_seconds"] if s[0].endswith("_count")}
    assert hist == {"realtime_fanout_latency_seconds_count": 1.0}


def test_label_values_are_bounded() -> None:
    m = GatewayMetrics(process_metrics=False)
    for i in range(50):
        m.received(f"/ns-{i}", f"evil:{i}")
        m.auth_error(f"reason-{i}")
        m.refused(f"user-{i}")
        m.rate_limit(f"class-{i}")
        m.disconnected("/client", f"why-{i}", 1.0)
    fams = families(m)
    assert {tuple(sorted(s[1].items())) for s in fams["realtime_messages_received"]} == {
        (("event", OTHER), ("namespace", OTHER))
    }
    # Known values are pre-created at 0; everything unknown landed in "other".
    reasons = {s[1]["reason"]: s[2] for s in fams["realtime_authentication_errors"]}
    assert set(reasons) == AUTH_REASONS | {OTHER} and reasons[OTHER] == 50
    refusals = {s[1]["reason"]: s[2] for s in fams["realtime_connection_refusals"]}
    assert set(refusals) == REFUSAL_REASONS | {OTHER} and refusals[OTHER] == 50
    classes = {s[1]["class"]: s[2] for s in fams["realtime_rate_limited"]}
    assert set(classes) == RATE_CLASSES | {OTHER} and classes[OTHER] == 50
    assert {s[1]["reason"] for s in fams["realtime_disconnections"]} == {OTHER}


def test_connect_disconnect_bookkeeping() -> None:
    m = GatewayMetrics(process_metrics=False)
    m.connected("/client")
    m.connected("/client")
    m.disconnected("/client", "client disconnect", 12.0)
    fams = families(m)
    assert ("realtime_active_connections", {"namespace": "/client"}, 1.0) in fams[
        "realtime_active_connections"
    ]
    assert (
        "realtime_disconnections_total",
        {"namespace": "/client", "reason": "client disconnect"},
        1.0,
    ) in fams["realtime_disconnections"]


def test_process_metrics_and_cpu_limit() -> None:
    m = GatewayMetrics()
    fams = families(m)
    assert "process_cpu_seconds" in fams
    (sample,) = fams["realtime_cpu_limit_cores"]
    assert sample[2] > 0


def test_two_instances_do_not_collide() -> None:
    a, b = GatewayMetrics(process_metrics=False), GatewayMetrics(process_metrics=False)
    a.location_updates.inc()
    assert families(b)["realtime_location_updates"][0][2] == 0.0


def test_cached_children_count_like_labels_and_stay_bounded() -> None:
    m = GatewayMetrics(process_metrics=False)
    for _ in range(3):
        m.received("/porter", "location:update")
        m.sent("/client", "porter:location", 2)
        m.attempted("/client")
    for i in range(200):  # a client inventing event names and namespaces
        m.received(f"/ns-{i}", f"evil:{i}")
        m.received("/porter", f"evil:{i}")
        m.sent("/client", f"made-up:{i}")
        m.attempted(f"/ns-{i}")
        m.disconnected("/client", f"why-{i}", None)
    fams = families(m)
    received = {(s[1]["namespace"], s[1]["event"]): s[2] for s in fams["realtime_messages_received"]}
    assert received == {("/porter", "location:update"): 3, (OTHER, OTHER): 200, ("/porter", OTHER): 200}
    sent = {(s[1]["namespace"], s[1]["event"]): s[2] for s in fams["realtime_messages_sent"]}
    assert sent == {("/client", "porter:location"): 6, ("/client", OTHER): 200}
    attempts = {s[1]["namespace"]: s[2] for s in fams["realtime_connection_attempts"]}
    assert attempts == {"/client": 3, OTHER: 200}
    # The caches hold known label values only: one entry per series, not one per invented name.
    assert set(m._received) == {("/porter", "location:update"), (OTHER, OTHER), ("/porter", OTHER)}
    assert len(m._sent) == 2 and len(m._attempts) == 2 and len(m._disconnections) == 1
    active = {s[1]["namespace"]: s[2] for s in fams["realtime_active_connections"]}
    assert active["/client"] == -200  # the disconnects above, through the cached child


def test_hot_path_counts_are_all_in_every_scrape() -> None:
    m = GatewayMetrics(process_metrics=False)

    def received() -> float:
        value = m.registry.get_sample_value(
            "realtime_messages_received_total", {"namespace": "/porter", "event": "location:update"}
        )
        return value or 0.0

    for _ in range(5):
        m.received("/porter", "location:update")
        m.location_update()
        m.sent("/client", "porter:location", 3)
    assert received() == 5
    fams = families(m)
    assert [s[2] for s in fams["realtime_location_updates"] if s[0].endswith("_total")] == [5]
    sent = {(s[1]["namespace"], s[1]["event"]): s[2] for s in fams["realtime_messages_sent"]}
    assert sent == {("/client", "porter:location"): 15}
    for _ in range(2):
        m.received("/porter", "location:update")
    assert received() == 7  # counted since the last scrape, added on top
    assert received() == 7  # and only once
