"""Joins metrics, tracing, logs, rate limits, DoS limits and the drain to the gateway's seams.

``install_operations(gateway, app)`` is called once by ``app.create_app``; it only uses the
extension points the core offers (connect/event guards, observers, hooks, the fan-out manager's
delivery callback and the handlers' event scope), so the handlers stay free of these concerns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web
from opentelemetry import trace
from redis.exceptions import NoScriptError, RedisError

from realtime_contract import NAMESPACE_ROLES
from realtime_gateway.auth.errors import AuthError, ConnectCode
from realtime_gateway.limits import (
    LIMIT_EXCEEDED,
    ConnectionGate,
    HandshakeWatchdog,
    LiveWebSockets,
    ProtectionConfig,
    install_payload_guard,
    install_transport_guard,
)
from realtime_gateway.observability.logs import correlation, new_flow
from realtime_gateway.observability.metrics import GatewayMetrics
from realtime_gateway.observability.tracing import Tracing, UnsampledFlow
from realtime_gateway.ratelimit import (
    MemoryRateLimiter,
    RateLimiter,
    RateRule,
    RedisRateLimiter,
    classify,
    parse_rule,
)
from realtime_gateway.tasks import stop_tasks
from realtime_gateway.transport.acks import ErrorCode, err

if TYPE_CHECKING:
    from realtime_gateway.app import Gateway
    from realtime_gateway.transport.handlers import Conn

log = logging.getLogger(__name__)

AUTH_CODES: Final = frozenset({"AUTH_REQUIRED", "AUTH_INVALID", "AUTH_EXPIRED", "FORBIDDEN_NAMESPACE"})
# Events whose failure means a message did not reach its recipients.
DELIVERY_EVENTS: Final = frozenset({"location:update", "chat:message:send", "job:offer:accept"})
DRAIN_EVENT: Final = "server:draining"
READINESS_INTERVAL_S: Final = 2.0
# Clean close code for "this server is restarting, come back" (RFC 6455 registry).
WS_SERVICE_RESTART: Final = 1012

REDIS_OPERATIONS: Final = frozenset(
    {
        "get", "set", "setex", "setnx", "getdel", "del", "unlink", "exists", "expire", "pexpire",
        "ttl", "pttl", "hget", "hset", "hmget", "hgetall", "hdel", "hincrby", "sadd", "srem",
        "smembers", "scard", "sismember", "zadd", "zrem", "zrange", "zrangebyscore", "incr",
        "eval", "evalsha", "script", "publish", "spublish", "ping", "pipeline",
    }
)  # fmt: skip


@dataclass(eq=False)
class Operations:
    """What an app holds for protection and observability."""

    metrics: GatewayMetrics
    tracing: Tracing
    limiter: RateLimiter
    gate: ConnectionGate
    watchdog: HandshakeWatchdog
    websockets: LiveWebSockets
    drain_seconds: float
    connected_at: dict[str, float] = field(default_factory=dict)
    disconnect_reasons: dict[str, str] = field(default_factory=dict)
    drained: bool = False


OPERATIONS_KEY: Final = web.AppKey("realtime_operations", Operations)


def rate_rules(settings: Any) -> dict[str, RateRule]:
    rules = {
        "general": parse_rule(settings.rate_limit_general),
        "location": parse_rule(settings.rate_limit_location),
        "chat": parse_rule(settings.rate_limit_chat),
    }
    if settings.connect_rate_limit:
        rules["connect"] = parse_rule(settings.connect_rate_limit)
    return rules


def protection_config(settings: Any) -> ProtectionConfig:
    return ProtectionConfig(
        max_connections=settings.max_connections,
        connect_rate=parse_rule(settings.connect_rate_limit) if settings.connect_rate_limit else None,
        trusted_proxy_header=settings.trusted_proxy_header,
        trusted_proxy_hops=settings.trusted_proxy_hops,
        max_payload_bytes=settings.max_payload_bytes,
        max_subscriptions=settings.max_subscriptions,
        handshake_timeout_s=settings.handshake_timeout_seconds,
    )


# --- Redis instrumentation ----------------------------------------------------------------------
_op_labels: dict[Any, str] = {}


def _op_label(name: Any) -> str:
    label = _op_labels.get(name)
    if label is None:
        op = (name.decode() if isinstance(name, bytes) else str(name)).lower()
        label = op if op in REDIS_OPERATIONS else "other"
        if len(_op_labels) < 512:  # command names come from our own code: a small set
            _op_labels[name] = label
    return label


def instrument_redis(client: Any, metrics: GatewayMetrics) -> None:
    """Count every command (``realtime_redis_hits_total``) and failure (``…_redis_errors_total``)."""
    if getattr(client, "_realtime_instrumented", False):
        return
    execute = client.execute_command

    async def execute_command(*args: Any, **options: Any) -> Any:
        op = _op_label(args[0]) if args else "other"
        try:
            result = await execute(*args, **options)
        except NoScriptError:
            raise  # redis-py loads the script and retries: part of the normal EVALSHA protocol
        except RedisError:
            metrics.redis_errors.labels(op).inc()
            raise
        metrics.redis_op(op)
        return result

    make_pipeline = client.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make_pipeline(*args, **kwargs)
        # A counting subclass, not a wrapper stored on the instance: a stored wrapper holding
        # ``pipe.execute`` (a bound method) made each pipeline a reference cycle, garbage for the
        # cyclic collector (four pipelines, 24 objects, per socket's connect and close).
        pipe.__class__ = _counted_pipeline_class(pipe.__class__)
        pipe._realtime_metrics = metrics
        return pipe

    client.execute_command = execute_command
    client.pipeline = pipeline
    client._realtime_instrumented = True


@cache
def _counted_pipeline_class(base: type) -> type:
    """``base`` (redis-py's ``Pipeline`` or ``ClusterPipeline``) whose ``execute`` counts in the
    metrics its instance carries; one class per base."""
    run = base.execute  # type: ignore[attr-defined]

    async def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        metrics: GatewayMetrics = self._realtime_metrics
        try:
            result = await run(self, *args, **kwargs)
        except RedisError:
            metrics.redis_errors.labels("pipeline").inc()
            raise
        metrics.redis_op("pipeline")
        return result

    return type(f"Counted{base.__name__}", (base,), {"execute": execute})


# --- observer (transport/handlers.Observer) -----------------------------------------------------
class MetricsObserver:
    def __init__(self, ops: Operations) -> None:
        self._ops = ops

    def on_event(self, conn: Conn | None, event: str, ack: dict[str, Any], seconds: float) -> None:
        metrics = self._ops.metrics
        namespace = conn.namespace if conn is not None else "other"
        metrics.received(namespace, event)
        ok = ack.get("ok") is True
        code: str | None = None
        if ok:
            if event == "location:update":
                metrics.location_update()
        else:
            code = str((ack.get("error") or {}).get("code"))
            if code == "INTERNAL" and event in DELIVERY_EVENTS:
                metrics.delivery_failures.labels(event).inc()
            Tracing.mark_error(trace.get_current_span(), code)
        if not log.isEnabledFor(logging.DEBUG):
            return  # the record's fields below cost more than the rest of this method
        log.debug(
            "handled %s",
            event,
            extra={
                "event": event,
                "namespace": namespace,
                "ok": ok,
                "code": code,
                "ms": round(seconds * 1000, 2),
            },
        )

    def on_connect(self, conn: Conn) -> None:
        self._ops.metrics.connected(conn.namespace)
        self._ops.connected_at[conn.sid] = time.monotonic()
        log.debug("connected", extra={"namespace": conn.namespace, "role": conn.claims.role})

    def on_disconnect(self, conn: Conn) -> None:
        started = self._ops.connected_at.pop(conn.sid, None)
        duration = time.monotonic() - started if started is not None else None
        reason = self._ops.disconnect_reasons.pop(conn.sid, "other")
        if self._ops.gate.draining:
            reason = "drain"
        self._ops.metrics.disconnected(conn.namespace, reason, duration)

    def on_auth_error(self, namespace: str, code: str) -> None:
        # Protection refusals travel the same path; they are counted by the gate, not as auth errors.
        if code in AUTH_CODES:
            self._ops.metrics.auth_error(code)


# --- the installer ------------------------------------------------------------------------------
def install_operations(gateway: Gateway, app: web.Application) -> Operations:
    settings = gateway.settings
    metrics = GatewayMetrics()
    tracing = Tracing.create(
        settings.otlp_endpoint, instance_id=settings.instance_id, sample_ratio=settings.trace_sample_ratio
    )
    rules = rate_rules(settings)
    limiter: RateLimiter
    if gateway.redis is not None:
        for client in (gateway.redis.commands, gateway.redis.publisher):
            instrument_redis(client, metrics)
        if gateway.redis.fast is not None:  # the location path's own connections
            gateway.redis.fast.on_command = lambda word: metrics.redis_op(_op_label(word))
        limiter = RedisRateLimiter(
            gateway.redis.commands,
            rules,
            on_error=lambda op: metrics.redis_errors.labels(op).inc(),
            fast=gateway.redis.fast,
        )
    else:
        limiter = MemoryRateLimiter(rules)
    handlers = gateway.handlers
    config = protection_config(settings)
    gate = ConnectionGate(config, limiter, metrics, connections=lambda: len(handlers.conns))
    watchdog = HandshakeWatchdog(gateway.sio, config.handshake_timeout_s, metrics)

    def oversize() -> None:
        metrics.refused("PAYLOAD_TOO_LARGE")

    websockets = install_transport_guard(gateway.sio, oversize)
    gateway.sio.on_slow_consumer = metrics.slow_consumers.inc
    install_payload_guard(app, config.max_payload_bytes, oversize)
    ops = Operations(metrics, tracing, limiter, gate, watchdog, websockets, settings.drain_seconds)
    app[OPERATIONS_KEY] = ops

    # Connect: count the attempt, then admission (draining, capacity, per-IP rate) before auth.
    async def admission(namespace: str, environ: dict[str, Any], auth: Any) -> None:
        metrics.attempted(namespace)
        refusal = await gate.admit(environ)
        if refusal is not None:
            raise AuthError(ConnectCode(refusal.code), refusal.message)

    # Events: the user's token bucket for the event's class, then the subscription cap. One guard
    # for both: each guard is a coroutine created and awaited for every event.
    async def protect(conn: Conn, event: str, data: Any) -> dict[str, Any] | None:
        event_class = classify(event)
        decision = await limiter.hit(conn.claims.user_id, event_class)
        if not decision.allowed:
            metrics.rate_limit(event_class)
            return err(
                ErrorCode.RATE_LIMITED,
                f"too many {event_class} events, retry later",
                retryAfterMs=decision.retry_after_ms,
            )
        if event != "order:subscribe":
            return None
        order_id = data.get("orderId") if isinstance(data, dict) else None
        if isinstance(order_id, str) and order_id in conn.orders:
            return None  # already held: not a new subscription
        if gate.allow_subscription(len(conn.orders)):
            return None
        return err(LIMIT_EXCEEDED, f"at most {config.max_subscriptions} subscriptions per socket")

    # protect's synchronous form (transport/handlers.SyncGuard) where the limiter answers without
    # I/O (in memory) and the event is not a subscription: the GPS stream's guard, per update.
    refusal_now = getattr(limiter, "refusal", None)

    def protect_sync_for(event: str) -> Callable[[Conn, Any], dict[str, Any] | None] | None:
        if refusal_now is None or event == "order:subscribe":
            return None
        event_class = classify(event)

        def check(conn: Conn, data: Any) -> dict[str, Any] | None:
            decision = refusal_now(conn.claims.user_id, event_class)
            if decision is None:
                return None
            metrics.rate_limit(event_class)
            return err(
                ErrorCode.RATE_LIMITED,
                f"too many {event_class} events, retry later",
                retryAfterMs=decision.retry_after_ms,
            )

        return check

    protect.sync_for = protect_sync_for  # type: ignore[attr-defined]

    handlers.connect_guards.insert(0, admission)
    handlers.event_guards.insert(0, protect)
    handlers.observers.append(MetricsObserver(ops))

    # python-socketio tells the disconnect handler why (client, ping timeout, transport close…);
    # the observer seam does not, so note it on the way in.
    on_disconnect = handlers.on_disconnect

    async def disconnect_with_reason(namespace: str, sid: str, reason: Any = None) -> None:
        if reason is not None:
            ops.disconnect_reasons[sid] = str(reason)
        try:
            await on_disconnect(namespace, sid, reason)
        finally:
            ops.disconnect_reasons.pop(sid, None)

    gateway.sio.on("disconnect", disconnect_with_reason, namespace="*")
    handlers.event_scope = event_scope_for(tracing)
    gateway.manager.on_delivered = _delivery_recorder(metrics, tracing)

    # realtime_ready follows /readyz (Redis, Kafka, draining) for the "no healthy instance" alert.
    async def follow_readiness() -> None:
        while True:
            try:
                ready, _ = await gateway.readiness()
            except Exception:
                ready = False
            metrics.ready.set(1 if ready else 0)
            await asyncio.sleep(READINESS_INTERVAL_S)

    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        watchdog.start()
        tasks.append(asyncio.create_task(follow_readiness(), name="readiness-gauge"))

    async def stop() -> None:
        await stop_tasks(*tasks)
        await watchdog.stop()
        tracing.force_flush(2.0)
        tracing.shutdown()

    gateway.on_startup.append(start)
    gateway.on_shutdown.append(stop)
    return ops


EventScope = Callable[[str, str], contextlib.AbstractContextManager[Any]]


def event_scope_for(tracing: Tracing) -> EventScope:
    """Each client event: a fresh correlation id for its logs and, when sampled, a server span.

    Sampling is decided first: an unsampled event (or any event while tracing is off) builds
    nothing span-related, no ids, attributes or context. It only marks the flow unsampled, so
    a span a handler opens further down (producing to Kafka) stays unsampled as before.
    """
    if not tracing.enabled:
        return _untraced_event

    def scope(event: str, namespace: str) -> contextlib.AbstractContextManager[Any]:
        if tracing.sample_socket_event():
            return _traced_event(tracing, event, namespace)
        return _UnsampledEvent()

    return scope


def _untraced_event(event: str, namespace: str) -> new_flow:
    return new_flow()


@contextlib.contextmanager
def _traced_event(tracing: Tracing, event: str, namespace: str) -> Iterator[None]:
    with correlation() as cid, tracing.socket_event_span(event, namespace, correlation_id=cid):
        yield


class _UnsampledEvent:
    __slots__ = ("_correlation", "_flow")

    def __init__(self) -> None:
        self._correlation = new_flow()
        self._flow = UnsampledFlow()

    def __enter__(self) -> None:
        self._correlation.__enter__()
        self._flow.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._flow.__exit__()
        self._correlation.__exit__()


def _delivery_recorder(
    metrics: GatewayMetrics, tracing: Tracing
) -> Callable[[str, str, int, float | None], None]:
    traced = tracing.enabled
    fanout_latency = metrics.fanout_latency
    location_latency = metrics.location_latency
    observe = metrics.pending.observe  # folded into the histograms at collect time

    def record(namespace: str, event: str, recipients: int, sent_at: float | None) -> None:
        if recipients <= 0:
            return  # nothing was sent: no count, span or latency
        metrics.sent(namespace, event, recipients)
        if traced:
            tracing.record_emit(event, namespace, recipients, sent_at)
        if sent_at is not None:
            latency = time.time() - sent_at
            if latency < 0.0:
                latency = 0.0
            observe(fanout_latency, latency)
            if event == "porter:location":
                observe(location_latency, latency)

    return record


async def metrics_response(request: web.Request) -> web.Response:
    ops = request.app[OPERATIONS_KEY]
    body, content_type = ops.metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})


# --- graceful drain -----------------------------------------------------------------------------
async def drain(gateway: Gateway, app: web.Application) -> None:
    """SIGTERM: stop being ready, refuse new sockets, move clients elsewhere, all within the budget.

    The drain uses at most 80% of ``RTG_DRAIN_SECONDS``; the rest is left for closing the HTTP
    server and the shutdown hooks (Kafka consumers commit their in-flight offsets there).
    """
    ops = app.get(OPERATIONS_KEY)
    if ops is None or ops.drained:
        return
    ops.drained = True
    budget = max(0.0, ops.drain_seconds * 0.8)
    started = time.monotonic()
    deadline = started + budget
    gateway.draining = True
    ops.gate.draining = True
    ops.metrics.ready.set(0)
    ops.metrics.draining.set(1)
    handlers = gateway.handlers
    log.info("draining", extra={"connections": len(handlers.conns), "budgetSeconds": round(budget, 2)})

    for namespace in NAMESPACE_ROLES:
        with contextlib.suppress(Exception):
            await gateway.sio.emit(
                DRAIN_EVENT, {"reconnect": True, "withinMs": int(budget * 1000)}, namespace=namespace
            )
    # Let load balancers see /readyz fail before the clients come back looking for a server.
    await asyncio.sleep(min(2.0, budget * 0.25))
    # Spread the closes over half of what is left so the other instances are not stampeded.
    spread = max(0.0, (deadline - time.monotonic()) * 0.5)
    closed = await ops.websockets.close_all(WS_SERVICE_RESTART, "server draining", spread)
    # Closed WebSockets end their Engine.IO sessions on their own; give that a moment.
    await _until(lambda: not handlers.conns, min(deadline, time.monotonic() + 1.0))
    log.info("drain: websockets closed", extra={"closed": closed, "left": len(handlers.conns)})
    # Long-polling sessions have no socket to close: end their Engine.IO session.
    # Bounded: closing a session waits for its queue to be polled, which an abandoned client never does.
    for eio_sid, eio_socket in list(gateway.sio.eio.sockets.items()):
        if getattr(eio_socket, "upgraded", False) or getattr(eio_socket, "closed", False):
            continue  # a WebSocket session: its transport was closed above
        with contextlib.suppress(Exception):
            left = max(0.05, min(1.0, deadline - time.monotonic()))
            await asyncio.wait_for(gateway.sio.eio.disconnect(eio_sid), left)
    await _until(lambda: not handlers.conns, deadline)
    for sid, conn in list(handlers.conns.items()):
        with contextlib.suppress(Exception):
            await gateway.sio.disconnect(sid, namespace=conn.namespace)
    log.info(
        "drained",
        extra={"left": len(handlers.conns), "seconds": round(time.monotonic() - started, 2)},
    )


async def _until(done: Callable[[], bool], deadline: float, step: float = 0.05) -> None:
    while not done() and time.monotonic() < deadline:  # noqa: ASYNC110 - the condition has no event
        await asyncio.sleep(min(step, max(0.0, deadline - time.monotonic())))


__all__ = [
    "OPERATIONS_KEY",
    "Operations",
    "drain",
    "event_scope_for",
    "install_operations",
    "instrument_redis",
    "metrics_response",
    "rate_rules",
]
