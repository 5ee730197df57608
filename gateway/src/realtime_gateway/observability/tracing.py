"""OpenTelemetry tracing: one span per handled socket event and per consumed Kafka record.

Spans go to an OTLP/HTTP endpoint (Jaeger, Tempo and the OpenTelemetry Collector ingest OTLP
natively). Without an endpoint, a no-op tracer is used and nothing is exported. The trace
context crosses Kafka in the W3C ``traceparent`` record header, so a chat message yields one
trace: socket event → produce → consume → emit.

The provider is private to the app rather than installed globally, so several apps can run in
one process (tests) without sharing exporters.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar, Token
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from realtime_gateway.observability.logs import correlation

log = logging.getLogger(__name__)

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
CORRELATION_ATTR: Final = "realtime.correlation_id"
SERVICE_NAME: Final = "realtime-gateway"
SOCKET_SPAN_PREFIX: Final = "socket "

# Set while an unsampled socket event runs: the event built no span, and a span opened inside its
# flow (producing to Kafka) must stay unsampled, as it would under an unsampled parent.
_unsampled_flow: ContextVar[bool] = ContextVar("realtime_unsampled_flow", default=False)

_propagator: Final = TraceContextTextMapPropagator()

KafkaHeaders = Sequence[tuple[str, bytes]]


def traces_url(endpoint: str) -> str:
    """``http://collector:4318`` → ``http://collector:4318/v1/traces``; a full URL stays as is."""
    base = endpoint.strip()
    if base.rstrip("/").endswith("/v1/traces"):
        return base.rstrip("/")
    return base.rstrip("/") + "/v1/traces"


def headers_to_carrier(headers: Iterable[tuple[str, bytes | str | None]] | None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    for key, value in headers or ():
        if value is None:
            continue
        carrier[key.lower()] = value.decode("latin-1") if isinstance(value, bytes) else value
    return carrier


def extract_context(carrier: Mapping[str, str]) -> Context:
    """The remote parent described by a ``traceparent`` carrier (empty context when absent)."""
    return _propagator.extract(carrier=dict(carrier))


def current_trace_headers() -> list[tuple[str, bytes]]:
    """``traceparent`` (and ``tracestate``) of the current span, as Kafka record headers."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return [(k, v.encode("latin-1")) for k, v in carrier.items()]


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get(TRACEPARENT)


def remote_parent(traceparent: str | None) -> contextlib.AbstractContextManager[None]:
    """Run the enclosed code as a continuation of the trace ``traceparent`` names (no-op without).

    Used where a flow crosses the Redis fan-out: the publishing instance puts its traceparent in
    the bus message and the delivering instance records its emit under it. Without one (tracing
    off) it is a shared no-op, not a generator per bus message.
    """
    if not traceparent:
        return _NO_PARENT
    return _attached(traceparent)


_NO_PARENT: Final = contextlib.nullcontext()


@contextlib.contextmanager
def _attached(traceparent: str) -> Iterator[None]:
    token = otel_context.attach(extract_context({TRACEPARENT: traceparent}))
    try:
        yield
    finally:
        otel_context.detach(token)


class UnsampledFlow:
    """Marks the enclosed flow as belonging to an unsampled trace without building a span."""

    __slots__ = ("_reset",)
    _reset: Token[bool]

    def __enter__(self) -> None:
        self._reset = _unsampled_flow.set(True)

    def __exit__(self, *exc: object) -> None:
        _unsampled_flow.reset(self._reset)


def _unsampled_parent() -> Context:
    """A parent that is valid but not sampled, so ``ParentBased`` drops the child (made on demand)."""
    span_context = SpanContext(
        trace_id=random.getrandbits(128) or 1,
        span_id=random.getrandbits(64) or 1,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.DEFAULT),
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context))


class SocketEventRootSampler(Sampler):  # type: ignore[misc]
    """Roots of new traces. A socket event's span is only built once the gateway has sampled the
    event (``Tracing.sample_socket_event``, before anything else), so it is recorded; every other
    root (a Kafka record without ``traceparent``, a produce outside any flow) by trace id ratio."""

    def __init__(self, ratio: float) -> None:
        self._ratio = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if kind is SpanKind.SERVER and name.startswith(SOCKET_SPAN_PREFIX):
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return self._ratio.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"SocketEventRootSampler{{{self._ratio.get_description()}}}"


class Tracing:
    """The app's tracer plus helpers that name spans and attributes consistently."""

    def __init__(
        self, tracer: Tracer, provider: TracerProvider | None = None, *, sample_ratio: float = 1.0
    ) -> None:
        self.tracer = tracer
        self._provider = provider
        self.sample_ratio = max(0.0, min(1.0, sample_ratio))

    def sample_socket_event(self) -> bool:
        """Whether to trace the next client event; decided before any span work is done."""
        if self._provider is None:
            return False
        ratio = self.sample_ratio
        return ratio >= 1.0 or random.random() < ratio

    @property
    def enabled(self) -> bool:
        return self._provider is not None

    @classmethod
    def disabled(cls) -> Tracing:
        return cls(trace.NoOpTracer())

    @classmethod
    def create(
        cls,
        endpoint: str | None,
        *,
        instance_id: str = "",
        sample_ratio: float = 1.0,
        service_name: str = SERVICE_NAME,
        export_timeout_s: float = 5.0,
    ) -> Tracing:
        """A tracer exporting to ``endpoint`` over OTLP/HTTP; a no-op tracer when it is empty."""
        if not endpoint:
            return cls.disabled()
        # Imported lazily: the exporter pulls in requests/protobuf, not needed when disabled.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        resource = Resource.create(
            {"service.name": service_name, **({"service.instance.id": instance_id} if instance_id else {})}
        )
        ratio = max(0.0, min(1.0, sample_ratio))
        provider = TracerProvider(resource=resource, sampler=ParentBased(SocketEventRootSampler(ratio)))
        exporter = OTLPSpanExporter(endpoint=traces_url(endpoint), timeout=export_timeout_s)
        # Short delay so spans show up promptly; the batch still bounds export overhead.
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
        return cls(provider.get_tracer("realtime_gateway"), provider, sample_ratio=ratio)

    # --- spans -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def socket_event_span(
        self, event: str, namespace: str, *, correlation_id: str | None = None
    ) -> Iterator[Span]:
        """Server span around one client event (``socket <event>``)."""
        attrs: dict[str, str] = {
            "messaging.system": "socket.io",
            "socketio.namespace": namespace,
            "socketio.event": event,
        }
        if correlation_id:
            attrs[CORRELATION_ATTR] = correlation_id
        with self._span(f"{SOCKET_SPAN_PREFIX}{event}", SpanKind.SERVER, attrs, None) as span:
            yield span

    @contextlib.contextmanager
    def kafka_consume_span(
        self,
        topic: str,
        partition: int,
        offset: int,
        headers: Iterable[tuple[str, bytes | str | None]] | None,
        *,
        correlation_id: str | None = None,
    ) -> Iterator[Span]:
        """Consumer span for one record, child of the producer's span when it sent ``traceparent``."""
        parent = extract_context(headers_to_carrier(headers))
        attrs: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.operation": "process",
            "messaging.destination.name": topic,
            "messaging.kafka.destination.partition": partition,
            "messaging.kafka.message.offset": offset,
        }
        if correlation_id:
            attrs[CORRELATION_ATTR] = correlation_id
        started = time.perf_counter()
        # The record is a flow of its own: its logs carry its correlation id (a fresh one if none).
        with (
            correlation(correlation_id),
            self._span(f"{topic} process", SpanKind.CONSUMER, attrs, parent) as span,
        ):
            yield span
            log.debug(
                "processed %s/%d@%d",
                topic,
                partition,
                offset,
                extra={"topic": topic, "ms": round((time.perf_counter() - started) * 1000, 2)},
            )

    @contextlib.contextmanager
    def kafka_produce_span(self, topic: str, *, correlation_id: str | None = None) -> Iterator[Span]:
        """Producer span; inside it, ``current_trace_headers()`` yields the headers to send."""
        attrs: dict[str, str] = {
            "messaging.system": "kafka",
            "messaging.operation": "publish",
            "messaging.destination.name": topic,
        }
        if correlation_id:
            attrs[CORRELATION_ATTR] = correlation_id
        with self._span(f"{topic} publish", SpanKind.PRODUCER, attrs, None) as span:
            yield span

    @contextlib.contextmanager
    def span(self, name: str, **attributes: str | int | float | bool) -> Iterator[Span]:
        """An internal child span (e.g. ``emit chat:message``)."""
        with self._span(name, SpanKind.INTERNAL, attributes, None) as s:
            yield s

    @contextlib.contextmanager
    def _span(
        self,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, str | int | float | bool],
        parent: Context | None,
    ) -> Iterator[Span]:
        if (
            parent is None
            and _unsampled_flow.get()
            and not trace.get_current_span().get_span_context().is_valid
        ):
            parent = _unsampled_parent()
        with self.tracer.start_as_current_span(
            name, context=parent, kind=kind, attributes=dict(attributes), record_exception=True
        ) as span:
            yield span

    def record_emit(self, event: str, namespace: str, recipients: int, started_at: float | None) -> None:
        """An ``emit <event>`` span from the emit call to the local delivery, inside a traced flow.

        Called after the fact by the fan-out; deliveries outside any span (another instance's
        relay) are not traced on their own, so they add no orphan traces.
        """
        if not self.enabled or not trace.get_current_span().get_span_context().is_valid:
            return
        span = self.tracer.start_span(
            f"emit {event}",
            kind=SpanKind.INTERNAL,
            attributes={"socketio.namespace": namespace, "realtime.recipients": recipients},
            start_time=int(started_at * 1e9) if started_at is not None else None,
        )
        span.end()

    @staticmethod
    def mark_error(span: Span, code: str) -> None:
        """Flag a handled failure (error ack) on the span without an exception."""
        span.set_status(Status(StatusCode.ERROR, code))
        span.set_attribute("realtime.error_code", code)

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        if self._provider is None:
            return True
        return self._provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()
