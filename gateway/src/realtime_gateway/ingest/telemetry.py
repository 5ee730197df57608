"""Metrics and spans of the Kafka bridge, recorded through the gateway's observability objects.

No-ops until :meth:`IngestTelemetry.attach` is given the app's ``GatewayMetrics`` and ``Tracing``
(observability/), so the ingest parts work and test on their own.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from realtime_gateway.observability.logs import correlation

log = logging.getLogger(__name__)


class IngestTelemetry:
    def __init__(self) -> None:
        self.metrics: Any = None
        self.tracing: Any = None

    def attach(self, metrics: Any, tracing: Any) -> None:
        self.metrics = metrics
        self.tracing = tracing

    def _safe(self, what: str, fn: Callable[[], object]) -> None:
        # Telemetry must never break delivery.
        try:
            fn()
        except Exception:
            log.debug("recording %s failed", what, exc_info=True)

    def record(self, source: str, result: str, count: int = 1) -> None:
        """``count`` consumed records (or HTTP events) and what became of them."""
        m = self.metrics
        if m is not None:
            self._safe("kafka_records", lambda: m.kafka_records.labels(source, result).inc(count))
            if result == "duplicate":
                self._safe("dedup_drops", lambda: m.dedup_drops.labels(source).inc(count))

    def error(self, operation: str) -> None:
        m = self.metrics
        if m is not None:
            self._safe("kafka_errors", lambda: m.kafka_errors.labels(operation).inc())

    def lag(self, lags: dict[tuple[str, int], int]) -> None:
        m = self.metrics
        if m is not None:
            try:
                for (topic, partition), value in lags.items():
                    m.kafka_consumer_lag.labels(topic, str(partition)).set(value)
            except Exception:
                log.debug("recording lag failed", exc_info=True)

    def consume_span(
        self,
        topic: str,
        partition: int,
        offset: int,
        headers: Iterable[tuple[str, bytes | str | None]] | None,
        correlation_id: str | None,
    ) -> contextlib.AbstractContextManager[object]:
        """A consumer span, child of the producer's ``traceparent`` header when there is one.

        With tracing off only the record's correlation id is bound (for its logs): building the
        no-op span and parsing the headers for it cost a good part of a record's handling.
        """
        tracing = self.tracing
        if tracing is None:
            return contextlib.nullcontext()
        if not getattr(tracing, "enabled", True):
            return correlation(correlation_id)
        span: contextlib.AbstractContextManager[object] = tracing.kafka_consume_span(
            topic, partition, offset, headers, correlation_id=correlation_id
        )
        return span

    @contextlib.contextmanager
    def produce_span(self, topic: str, correlation_id: str | None) -> Iterator[None]:
        if self.tracing is None:
            yield
            return
        with self.tracing.kafka_produce_span(topic, correlation_id=correlation_id):
            yield
