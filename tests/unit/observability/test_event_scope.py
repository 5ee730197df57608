"""The scope around each client event: sampling is decided first, and an unsampled event builds no
span, yet a Kafka produce inside it stays unsampled (no partial traces starting at the produce)."""

from __future__ import annotations

import re

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased

from realtime_gateway.observability.logs import current_correlation_id, new_correlation_id, new_flow
from realtime_gateway.observability.tracing import (
    CORRELATION_ATTR,
    SocketEventRootSampler,
    Tracing,
    current_traceparent,
)
from realtime_gateway.observability.wiring import event_scope_for

pytestmark = pytest.mark.unit


def traced(ratio: float) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(SocketEventRootSampler(ratio)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider.get_tracer("test"), provider, sample_ratio=ratio), exporter


def test_correlation_ids_are_cheap_unique_and_uuid_shaped() -> None:
    ids = [new_correlation_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", cid) for cid in ids)
    assert len({cid[:16] for cid in ids}) == 1  # one random prefix per process, a counter after it


def test_tracing_off_binds_only_a_correlation_id() -> None:
    scope = event_scope_for(Tracing.disabled())
    with scope("location:update", "/porter"):
        cid = current_correlation_id()
        assert cid is not None and len(cid) == 32
        assert current_correlation_id() == cid  # formatted on demand, the same each time
        assert not trace.get_current_span().get_span_context().is_valid
        assert current_traceparent() is None
    with scope("location:update", "/porter"):
        assert current_correlation_id() not in (None, cid)
    assert current_correlation_id() is None


def test_sampled_event_is_a_server_span_with_its_correlation_id() -> None:
    tracing, exporter = traced(1.0)
    scope = event_scope_for(tracing)
    with scope("chat:message:send", "/client"):
        cid = current_correlation_id()
        with tracing.kafka_produce_span("chat-events", correlation_id=cid):
            traceparent = current_traceparent()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    sock, pub = spans["socket chat:message:send"], spans["chat-events publish"]
    assert sock.parent is None and sock.attributes is not None and sock.attributes[CORRELATION_ATTR] == cid
    assert pub.parent is not None and pub.parent.span_id == sock.context.span_id
    assert traceparent is not None and int(traceparent[-2:], 16) & 1  # the sampled flag


def test_unsampled_event_builds_no_span_and_keeps_its_children_unsampled() -> None:
    tracing, exporter = traced(0.0)
    scope = event_scope_for(tracing)
    with scope("chat:message:send", "/client"):
        assert current_correlation_id() is not None
        assert not trace.get_current_span().get_span_context().is_valid  # nothing was built
        with tracing.kafka_produce_span("chat-events") as produce:
            # The consumer sees a valid but unsampled parent and drops its spans too.
            assert not produce.is_recording()
            traceparent = current_traceparent()
            tracing.record_emit("chat:message", "/client", 2, None)
    assert traceparent is not None and not int(traceparent[-2:], 16) & 1
    assert exporter.get_finished_spans() == ()
    # Outside any event flow, a produce is a root sampled by ratio (0 here): also dropped.
    with tracing.kafka_produce_span("chat-events") as produce:
        assert not produce.is_recording()
    assert exporter.get_finished_spans() == ()


def test_ratio_samples_whole_flows() -> None:
    tracing, exporter = traced(0.5)
    scope = event_scope_for(tracing)
    events = 400
    for _ in range(events):
        with scope("chat:message:send", "/client"), tracing.kafka_produce_span("chat-events"):
            pass
    spans = exporter.get_finished_spans()
    sockets = [s for s in spans if s.name == "socket chat:message:send"]
    produces = [s for s in spans if s.name == "chat-events publish"]
    # Binomial(400, 0.5): outside 120..280 once in ~10^18 runs.
    assert 120 <= len(sockets) <= 280
    # A produce is recorded exactly when its event was, always as the event span's child.
    assert len(produces) == len(sockets)
    parents = {s.context.span_id for s in sockets}
    assert all(p.parent is not None and p.parent.span_id in parents for p in produces)


async def test_a_lazy_flow_id_is_one_id_for_the_flow_and_its_tasks() -> None:
    import asyncio

    async def child() -> str | None:
        await asyncio.sleep(0)
        return current_correlation_id()

    with new_flow():
        first = current_correlation_id()
        seen = await asyncio.gather(child(), asyncio.create_task(child()))
        assert first is not None and re.fullmatch(r"[0-9a-f]{32}", first)
        assert list(seen) == [first, first]
    with new_flow():
        assert current_correlation_id() != first
    assert current_correlation_id() is None
