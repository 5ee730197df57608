from __future__ import annotations

import pytest

from realtime_gateway.ingest.telemetry import IngestTelemetry
from realtime_gateway.observability.metrics import GatewayMetrics
from realtime_gateway.observability.tracing import Tracing

pytestmark = pytest.mark.unit


def test_detached_telemetry_is_a_no_op() -> None:
    t = IngestTelemetry()
    t.record("orders", "delivered")
    t.error("consume")
    t.lag({("orders", 0): 3})
    with t.consume_span("orders", 0, 1, [], None), t.produce_span("orders", "c1"):
        pass


def test_records_duplicates_errors_and_lag_reach_the_gateway_metrics() -> None:
    metrics = GatewayMetrics(process_metrics=False)
    t = IngestTelemetry()
    t.attach(metrics, Tracing.disabled())
    t.record("orders", "delivered")
    t.record("orders", "duplicate")
    t.record("http", "malformed")
    t.error("produce")
    t.lag({("orders", 2): 7})
    value = metrics.registry.get_sample_value
    assert value("realtime_kafka_records_total", {"topic": "orders", "result": "delivered"}) == 1
    assert value("realtime_kafka_records_total", {"topic": "orders", "result": "duplicate"}) == 1
    assert value("realtime_dedup_drops_total", {"topic": "orders"}) == 1
    assert value("realtime_kafka_records_total", {"topic": "http", "result": "malformed"}) == 1
    assert value("realtime_kafka_errors_total", {"operation": "produce"}) == 1
    assert value("realtime_kafka_consumer_lag", {"topic": "orders", "partition": "2"}) == 7
    with t.consume_span(
        "orders", 0, 1, [("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")], "c"
    ):
        pass
