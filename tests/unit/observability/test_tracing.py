from __future__ import annotations

import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from realtime_gateway.observability.tracing import (
    CORRELATION_ATTR,
    Tracing,
    current_trace_headers,
    current_traceparent,
    headers_to_carrier,
    remote_parent,
    traces_url,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def traced() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider.get_tracer("test"), provider), exporter


def test_disabled_without_endpoint() -> None:
    t = Tracing.create(None)
    assert not t.enabled
    with t.socket_event_span("chat:message:send", "/client") as span:
        assert not span.get_span_context().is_valid
        assert current_traceparent() is None
        assert current_trace_headers() == []
    assert t.force_flush()
    t.shutdown()
    assert not Tracing.create("").enabled


def test_enabled_with_endpoint() -> None:
    t = Tracing.create("http://127.0.0.1:9/", instance_id="gw-1")
    try:
        assert t.enabled
    finally:
        t.shutdown()


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("http://c:4318", "http://c:4318/v1/traces"),
        ("http://c:4318/", "http://c:4318/v1/traces"),
        ("http://c:4318/v1/traces", "http://c:4318/v1/traces"),
        ("https://otel.example/otlp/", "https://otel.example/otlp/v1/traces"),
    ],
)
def test_traces_url(given: str, url: str) -> None:
    assert traces_url(given) == url


def test_socket_to_kafka_to_consumer_is_one_trace(traced: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = traced
    with (
        tracing.socket_event_span("chat:message:send", "/client", correlation_id="cid-1"),
        tracing.kafka_produce_span("chat-events", correlation_id="cid-1"),
    ):
        headers = current_trace_headers()
        traceparent = current_traceparent()
    assert traceparent and dict(headers)["traceparent"].decode() == traceparent

    # The consumer side runs with no ambient context, as in another process.
    wire = [("correlation-id", b"cid-1"), *headers]
    with (
        tracing.kafka_consume_span("chat-events", 0, 42, wire, correlation_id="cid-1"),
        tracing.span("emit chat:message", room="order"),
    ):
        pass

    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {
        "socket chat:message:send",
        "chat-events publish",
        "chat-events process",
        "emit chat:message",
    }
    trace_ids = {s.context.trace_id for s in spans.values()}
    assert len(trace_ids) == 1
    sock, pub = spans["socket chat:message:send"], spans["chat-events publish"]
    proc, emit = spans["chat-events process"], spans["emit chat:message"]
    assert sock.parent is None and sock.kind == SpanKind.SERVER
    assert pub.parent is not None and pub.parent.span_id == sock.context.span_id
    assert proc.parent is not None and proc.parent.span_id == pub.context.span_id
    assert proc.kind == SpanKind.CONSUMER
    assert emit.parent is not None and emit.parent.span_id == proc.context.span_id
    assert proc.attributes is not None and proc.attributes["messaging.kafka.message.offset"] == 42
    assert sock.attributes is not None and sock.attributes[CORRELATION_ATTR] == "cid-1"


def test_consume_without_traceparent_starts_a_new_trace(traced: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = traced
    with tracing.kafka_consume_span("order-events", 1, 7, None):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.parent is None


def test_error_status(traced: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = traced
    with tracing.socket_event_span("order:subscribe", "/client") as span:
        Tracing.mark_error(span, "FORBIDDEN")
    (s,) = exporter.get_finished_spans()
    assert not s.status.is_ok
    assert s.attributes is not None and s.attributes["realtime.error_code"] == "FORBIDDEN"


def test_headers_to_carrier() -> None:
    assert headers_to_carrier([("TraceParent", b"00-a-b-01"), ("x", None), ("y", "s")]) == {
        "traceparent": "00-a-b-01",
        "y": "s",
    }
    assert headers_to_carrier(None) == {}


def test_emit_is_recorded_only_inside_a_flow(traced: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = traced
    tracing.record_emit("chat:message", "/client", 2, None)  # no flow: nothing
    assert exporter.get_finished_spans() == ()
    with tracing.kafka_consume_span("chat-events", 0, 1, None) as consume:
        tracing.record_emit("chat:message", "/client", 2, time.time() - 0.01)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    emit = spans["emit chat:message"]
    assert emit.parent is not None and emit.parent.span_id == consume.get_span_context().span_id
    assert emit.attributes is not None and emit.attributes["realtime.recipients"] == 2
    assert emit.start_time is not None and emit.end_time is not None
    assert emit.end_time - emit.start_time >= 9_000_000


def test_a_bus_message_s_trace_continues_on_the_receiving_instance(
    traced: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = traced
    with tracing.span("emit location:update", room="order"):
        traceparent = current_traceparent()
    assert traceparent
    with remote_parent(traceparent), tracing.span("deliver", room="order"):
        pass
    with remote_parent(None), tracing.span("untraced", room="order"):  # no parent: a trace of its own
        pass
    emitted, delivered, untraced = exporter.get_finished_spans()
    assert delivered.parent is not None and delivered.parent.span_id == emitted.context.span_id
    assert delivered.context.trace_id == emitted.context.trace_id
    assert untraced.parent is None and untraced.context.trace_id != emitted.context.trace_id
