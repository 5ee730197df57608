"""Prometheus metrics of one gateway process.

Each app owns a private ``CollectorRegistry`` (several apps can live in one test process).
Label values are clamped to small known sets so a client cannot create unbounded series:
no user, order or socket ids ever become labels.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import Metric as PromMetric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from realtime_contract import NAMESPACE_ROLES, Metric

OTHER: Final = "other"

CLIENT_EVENTS: Final = frozenset(
    {
        "order:subscribe",
        "order:unsubscribe",
        "location:update",
        "chat:message:send",
        "chat:typing",
        "job:offer:accept",
        "job:offer:reject",
    }
)
SERVER_EVENTS: Final = frozenset(
    {
        "session",
        "order:status",
        "porter:location",
        "chat:message",
        "chat:typing",
        "job:offer",
        "job:offer:closed",
        "notification",
        "recovered",
        "error",
        "server:draining",
    }
)
RATE_CLASSES: Final = frozenset({"general", "location", "chat", "connect"})
AUTH_REASONS: Final = frozenset({"AUTH_REQUIRED", "AUTH_INVALID", "AUTH_EXPIRED", "FORBIDDEN_NAMESPACE"})
REFUSAL_REASONS: Final = frozenset(
    {"CAPACITY", "RATE_LIMITED", "DRAINING", "HANDSHAKE_TIMEOUT", "PAYLOAD_TOO_LARGE"}
)
KAFKA_TOPICS_FALLBACK: Final = OTHER

# Seconds; fan-out within one region is expected in the low milliseconds, the tail up to seconds.
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DURATION_BUCKETS: Final = (1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 86400.0)


def _clamp(value: str, allowed: Iterable[str]) -> str:
    return value if value in allowed else OTHER


def namespace_label(namespace: str | None) -> str:
    return _clamp(namespace or "/", NAMESPACE_ROLES)


def client_event_label(event: str) -> str:
    return _clamp(event, CLIENT_EVENTS)


def server_event_label(event: str) -> str:
    return _clamp(event, SERVER_EVENTS)


LabelKey = tuple[str, ...]


def _cached_child(
    cache: dict[LabelKey, Any], metric: Any, key: LabelKey, clamp: Callable[[LabelKey], LabelKey]
) -> Any:
    """The child of ``metric`` for ``key``'s clamped label values, from ``cache`` after the first time.

    ``labels()`` validates and locks on every call (about 1.7 µs, several times per event on the
    hot path); a cached child's ``inc`` is a fifth of that. Only clamped values become keys (an
    unknown value misses, is clamped and finds "other"), so clients cannot grow the cache.
    """
    child = cache.get(key)
    if child is None:
        labels = clamp(key)
        child = cache.get(labels)
        if child is None:
            child = cache[labels] = metric.labels(*labels)
    return child


def _ns_event(key: LabelKey) -> LabelKey:
    return namespace_label(key[0]), client_event_label(key[1])


def _ns_server_event(key: LabelKey) -> LabelKey:
    return namespace_label(key[0]), server_event_label(key[1])


def _ns(key: LabelKey) -> LabelKey:
    return (namespace_label(key[0]),)


class PendingCounts(Collector):
    """Counter increments and histogram observations of the hot path (each event, each delivery,
    each room message's fan-out latency), kept as plain numbers and added to their Prometheus
    children when the registry is collected, which every scrape and sample read starts with. A
    child's ``inc`` or ``observe`` validates and takes a lock on each call; a dict or list
    update is a fraction of that. Registered first in the registry, so it runs before the
    collectors that read the children. Counting and scraping both happen on the event loop.
    """

    def __init__(self) -> None:
        self.counts: dict[Any, float] = {}
        # histogram (or child) -> [its upper bounds, count per bucket, sum]
        self.observations: dict[Any, list[Any]] = {}

    def add(self, child: Any, amount: float = 1) -> None:
        counts = self.counts
        counts[child] = counts.get(child, 0) + amount

    def observe(self, histogram: Any, value: float) -> None:
        """``histogram.observe(value)`` (an unlabelled histogram or a child) at collect time: the
        bucket found as Histogram.observe finds it (the first upper bound >= value)."""
        if value != value:  # NaN lands in no bucket there; keep that path
            histogram.observe(value)
            return
        pending = self.observations.get(histogram)
        if pending is None:
            # prometheus_client's internals (checked against ``observe`` by a unit test); should an
            # upgrade rename them, observations go through ``observe`` again rather than fail.
            bounds = getattr(histogram, "_upper_bounds", None)
            if bounds is None or not (hasattr(histogram, "_buckets") and hasattr(histogram, "_sum")):
                histogram.observe(value)
                return
            pending = self.observations[histogram] = [bounds, [0] * len(bounds), 0.0]
        pending[1][bisect_left(pending[0], value)] += 1
        pending[2] += value

    def flush(self) -> None:
        counts, self.counts = self.counts, {}
        for child, amount in counts.items():
            child.inc(amount)
        observations, self.observations = self.observations, {}
        for histogram, (_, buckets, total) in observations.items():
            for i, n in enumerate(buckets):
                if n:
                    histogram._buckets[i].inc(n)
            histogram._sum.inc(total)

    def describe(self) -> list[PromMetric]:
        return []

    def collect(self) -> list[PromMetric]:
        self.flush()
        return []


def cpu_limit_cores() -> float:
    """CPU cores this process may use: the cgroup v2 quota if one is set, else the affinity mask."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return float(quota) / float(period)
    except (OSError, ValueError):
        pass
    return float(len(os.sched_getaffinity(0)))


class GatewayMetrics:
    """Every metric the gateway exports, bound to one registry."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process_metrics: bool = True) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.pending = PendingCounts()
        r.register(self.pending)  # first: flushed before any metric is collected
        if process_metrics:
            # process_cpu_seconds_total etc. feed the CPU warning alert.
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

        # --- the seed's metrics ------------------------------------------------------------
        self.active_connections = Gauge(
            Metric.ACTIVE_CONNECTIONS, "Sockets connected to this instance", ["namespace"], registry=r
        )
        self.messages_received = Counter(
            Metric.MESSAGES_RECEIVED, "Client events received", ["namespace", "event"], registry=r
        )
        self.messages_sent = Counter(
            Metric.MESSAGES_SENT, "Events emitted to local sockets", ["namespace", "event"], registry=r
        )
        self.location_updates = Counter(
            Metric.LOCATION_UPDATES, "Accepted porter location updates", registry=r
        )
        self.fanout_latency = Histogram(
            Metric.FANOUT_LATENCY,
            "Seconds from receipt (or event time) to emit on this instance",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.location_latency = Histogram(
            Metric.LOCATION_LATENCY,
            "Seconds from receipt of a location:update to its emit to the order room",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.auth_errors = Counter(Metric.AUTH_ERRORS, "Refused authentications", ["reason"], registry=r)
        self.redis_hits = Counter(Metric.REDIS_HITS, "Redis operations by kind", ["operation"], registry=r)

        # --- ours ----------------------------------------------------------------------------
        self.connection_attempts = Counter(
            Metric.CONNECTION_ATTEMPTS, "Namespace connection attempts", ["namespace"], registry=r
        )
        self.connection_refusals = Counter(
            Metric.CONNECTION_REFUSALS,
            "Connections or packets refused by a protection limit",
            ["reason"],
            registry=r,
        )
        self.disconnections = Counter(
            Metric.DISCONNECTIONS, "Sockets disconnected", ["namespace", "reason"], registry=r
        )
        self.slow_consumers = Counter(
            Metric.SLOW_CONSUMERS,
            "WebSocket connections cut off for falling RTG_WS_MAX_PENDING_BYTES behind",
            registry=r,
        )
        self.connection_duration = Histogram(
            Metric.CONNECTION_DURATION,
            "Lifetime of a socket in seconds",
            ["namespace"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.rate_limited = Counter(
            Metric.RATE_LIMITED, "Events refused by the per-user rate limit", ["class"], registry=r
        )
        self.subscriptions_refused = Counter(
            Metric.SUBSCRIPTION_REFUSALS, "Subscriptions refused by the per-socket cap", registry=r
        )
        self.delivery_failures = Counter(
            Metric.DELIVERY_FAILURES, "Events that could not be delivered or forwarded", ["event"], registry=r
        )
        self.redis_errors = Counter(Metric.REDIS_ERRORS, "Failed Redis operations", ["operation"], registry=r)
        self.kafka_errors = Counter(Metric.KAFKA_ERRORS, "Failed Kafka operations", ["operation"], registry=r)
        self.kafka_consumer_lag = Gauge(
            Metric.KAFKA_CONSUMER_LAG,
            "Records between the committed/consumed position and the partition end",
            ["topic", "partition"],
            registry=r,
        )
        self.kafka_records = Counter(
            Metric.KAFKA_RECORDS, "Kafka records consumed", ["topic", "result"], registry=r
        )
        self.dedup_drops = Counter(
            Metric.DEDUP_DROPS, "Events dropped because their eventId was seen before", ["topic"], registry=r
        )
        self.ready = Gauge(Metric.READY, "1 when this instance reports ready", registry=r)
        self.draining = Gauge(Metric.DRAINING, "1 while this instance drains", registry=r)
        self.cpu_limit = Gauge(Metric.CPU_LIMIT_CORES, "CPU cores available to this process", registry=r)
        self.cpu_limit.set(cpu_limit_cores())
        self._active: dict[LabelKey, Any] = {}
        self._disconnections: dict[LabelKey, Any] = {}
        self._durations: dict[LabelKey, Any] = {}
        self._attempts: dict[LabelKey, Any] = {}
        self._received: dict[LabelKey, Any] = {}
        self._sent: dict[LabelKey, Any] = {}
        self._redis_ops: dict[str, Any] = {}
        # Known label values start at 0, so every series exists from the first scrape on
        # (rate() and absent() behave, and dashboards show 0 instead of "no data").
        for ns in NAMESPACE_ROLES:
            self.active_connections.labels(ns)
        for reason in sorted(AUTH_REASONS):
            self.auth_errors.labels(reason)
        for reason in sorted(REFUSAL_REASONS):
            self.connection_refusals.labels(reason)
        for event_class in sorted(RATE_CLASSES):
            self.rate_limited.labels(event_class)

    # --- convenience used by the handlers ------------------------------------------------------
    # Children are cached per label values (see _cached_child): these run for every event,
    # delivery, connect and Redis command.
    def connected(self, namespace: str) -> None:
        _cached_child(self._active, self.active_connections, (namespace,), _ns).inc()

    def disconnected(self, namespace: str, reason: str, duration_s: float | None) -> None:
        _cached_child(self._active, self.active_connections, (namespace,), _ns).dec()
        _cached_child(self._disconnections, self.disconnections, (namespace, reason), _ns_reason).inc()
        if duration_s is not None:
            _cached_child(self._durations, self.connection_duration, (namespace,), _ns).observe(duration_s)

    def attempted(self, namespace: str) -> None:
        _cached_child(self._attempts, self.connection_attempts, (namespace,), _ns).inc()

    def received(self, namespace: str, event: str) -> None:
        child = self._received.get((namespace, event))
        if child is None:
            child = _cached_child(self._received, self.messages_received, (namespace, event), _ns_event)
        self.pending.add(child)

    def sent(self, namespace: str, event: str, count: int = 1) -> None:
        if count > 0:
            child = self._sent.get((namespace, event))
            if child is None:
                child = _cached_child(self._sent, self.messages_sent, (namespace, event), _ns_server_event)
            self.pending.add(child, count)

    def location_update(self) -> None:
        self.pending.add(self.location_updates)

    def refused(self, reason: str) -> None:
        self.connection_refusals.labels(_clamp(reason, REFUSAL_REASONS)).inc()

    def auth_error(self, reason: str) -> None:
        self.auth_errors.labels(_clamp(reason, AUTH_REASONS)).inc()

    def rate_limit(self, event_class: str) -> None:
        self.rate_limited.labels(_clamp(event_class, RATE_CLASSES)).inc()

    def redis_op(self, operation: str) -> None:
        # Callers pass a value already clamped to the known operations.
        child = self._redis_ops.get(operation)
        if child is None:
            child = self._redis_ops[operation] = self.redis_hits.labels(operation)
        child.inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _ns_reason(key: LabelKey) -> LabelKey:
    return namespace_label(key[0]), _clamp(key[1], DISCONNECT_REASONS)


DISCONNECT_REASONS: Final = frozenset(
    {
        "client disconnect",
        "server disconnect",
        "ping timeout",
        "transport close",
        "transport error",
        "drain",
    }
)
