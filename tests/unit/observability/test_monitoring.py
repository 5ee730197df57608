"""The shipped alert rules and dashboard: well-formed, and referencing only exported metrics.

Here: the rule-file schema, a PromQL sanity pass and the metric names against the real registry.
Prometheus's own parser checks the same files in test_promql.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import yaml

from realtime_contract import monitoring
from realtime_gateway.observability.metrics import GatewayMetrics

pytestmark = pytest.mark.unit

RULES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["groups"],
    "properties": {
        "groups": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "rules"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "interval": {"type": "string", "pattern": r"^\d+[smhdwy]$"},
                    "limit": {"type": "integer"},
                    "rules": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["alert", "expr"],
                            "properties": {
                                "alert": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                                "expr": {"type": "string", "minLength": 1},
                                "for": {"type": "string", "pattern": r"^(\d+(ms|[smhdwy]))+$"},
                                "keep_firing_for": {"type": "string"},
                                "labels": {
                                    "type": "object",
                                    "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                                    "additionalProperties": {"type": "string"},
                                },
                                "annotations": {
                                    "type": "object",
                                    "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                                    "additionalProperties": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}

METRIC_RE = re.compile(r"\b(realtime_[a-z0-9_]+)\b")
SUFFIXES = ("_bucket", "_sum", "_count", "_created")


def exported_sample_names() -> set[str]:
    """Every sample name the gateway can expose, from the real registry (not a copy of the list)."""
    m = GatewayMetrics()
    names: set[str] = set()
    for metric in m.registry.collect():
        names.add(metric.name)
        if metric.type == "counter":
            names.add(metric.name + "_total")
        if metric.type == "histogram":
            names.update(metric.name + s for s in SUFFIXES)
    return names


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(monitoring.prometheus_rules_yaml())
    jsonschema.validate(doc, RULES_SCHEMA)
    return [r for g in doc["groups"] for r in g["rules"]]


def check_promql(expr: str) -> None:
    depth = {"(": 0, "[": 0, "{": 0}
    closing = {")": "(", "]": "[", "}": "{"}
    stripped = re.sub(r'"[^"]*"', '""', expr)
    for ch in stripped:
        if ch in depth:
            depth[ch] += 1
        elif ch in closing:
            depth[closing[ch]] -= 1
            assert depth[closing[ch]] >= 0, f"unbalanced {ch} in {expr}"
    assert all(v == 0 for v in depth.values()), f"unbalanced brackets in {expr}"
    for rng in re.findall(r"\[([^\]]+)\]", stripped):
        assert re.fullmatch(r"\d+[smhdwy]|\$__rate_interval|\$__interval", rng.strip()), rng


def test_rules_file_matches_the_rule_file_schema() -> None:
    assert len(rules()) >= 7


def test_seed_alerts_are_present_with_their_severity() -> None:
    by_name = {r["alert"]: r for r in rules()}
    assert by_name["RealtimeGatewayNoHealthyInstances"]["labels"]["severity"] == "P0"
    assert by_name["RealtimeGatewayRedisConnectionFailures"]["labels"]["severity"] == "P1"
    lag = by_name["RealtimeGatewayKafkaConsumerLagHigh"]
    assert lag["labels"]["severity"] == "P2" and "> 5000" in lag["expr"]
    warnings = {n for n, r in by_name.items() if r["labels"]["severity"] == "warning"}
    assert {
        "RealtimeGatewayConnectionsHigh",
        "RealtimeGatewayCpuHigh",
        "RealtimeGatewayAuthErrorRateHigh",
        "RealtimeGatewayDeliveryFailuresHigh",
    } <= warnings
    assert "> 4000" in by_name["RealtimeGatewayConnectionsHigh"]["expr"]
    assert "> 0.7" in by_name["RealtimeGatewayCpuHigh"]["expr"]
    assert "> 0.05" in by_name["RealtimeGatewayAuthErrorRateHigh"]["expr"]
    assert "> 0.01" in by_name["RealtimeGatewayDeliveryFailuresHigh"]["expr"]
    for r in rules():
        assert r["annotations"].get("summary") and r["annotations"].get("runbook")


def test_rules_reference_only_exported_metrics() -> None:
    exported = exported_sample_names()
    for r in rules():
        check_promql(r["expr"])
        used = set(METRIC_RE.findall(r["expr"]))
        assert used, f"{r['alert']} uses no gateway metric"
        assert used <= exported, f"{r['alert']} uses unknown {used - exported}"
        for other in re.findall(r"\b(process_[a-z_]+)\b", r["expr"]):
            assert other in exported


def dashboard() -> dict[str, Any]:
    doc = json.loads(monitoring.grafana_dashboard_json())
    assert isinstance(doc, dict)
    return doc


def test_dashboard_loads_and_has_the_seed_sections() -> None:
    doc = dashboard()
    assert doc["uid"] and doc["title"] and isinstance(doc["schemaVersion"], int)
    rows = [p["title"] for p in doc["panels"] if p["type"] == "row"]
    assert rows == ["Connection Metrics", "Performance Metrics", "Error Metrics"]
    titles = {p["title"] for p in doc["panels"]}
    for wanted in (
        "Active connections by namespace",
        "Connection / disconnection rate",
        "Average connection duration",
        "Message throughput in",
        "Message throughput out",
        "Fan-out latency",
        "Location update latency",
        "Authentication errors",
        "Rate limit exceeded",
        "Delivery failures",
        "Redis / Kafka errors",
    ):
        assert wanted in titles
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    fanout = next(p for p in doc["panels"] if p["title"] == "Fan-out latency")
    assert {t["legendFormat"] for t in fanout["targets"]} == {"p50", "p95", "p99"}


def test_dashboard_references_only_exported_metrics() -> None:
    exported = exported_sample_names()
    seen: set[str] = set()
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            check_promql(target["expr"])
            used = set(METRIC_RE.findall(target["expr"]))
            assert used, f"panel {panel['title']} queries no gateway metric"
            assert used <= exported, f"panel {panel['title']} uses unknown {used - exported}"
            seen |= used
    # Every seed metric is on the dashboard.
    for seed in (
        "realtime_active_connections",
        "realtime_messages_received_total",
        "realtime_messages_sent_total",
        "realtime_location_updates_total",
        "realtime_fanout_latency_seconds_bucket",
        "realtime_authentication_errors_total",
        "realtime_redis_hits_total",
    ):
        assert seed in seen, seed


def test_checker_catches_a_typo() -> None:
    exported = exported_sample_names()
    assert "realtime_active_conections" not in exported
    with pytest.raises(AssertionError):
        check_promql("sum(rate(realtime_messages_sent_total[5m])")
