"""DoS limits of one gateway instance (seed "Security Architecture → DoS Protection").

- connections per instance: a namespace connect beyond ``max_connections`` is refused ``CAPACITY``;
- connection attempts per client IP and window (when configured): refused ``RATE_LIMITED`` with
  ``retryAfterMs`` (shared across instances through the same token bucket as the per-user limits);
- payload size: Engine.IO's ``max_http_buffer_size``; a bigger WebSocket frame closes the
  connection with 1009, a bigger polling POST gets HTTP 400 and the session ends;
- subscriptions per socket: ``order:subscribe`` beyond ``max_subscriptions`` acks ``LIMIT_EXCEEDED``;
- handshake timeout: an Engine.IO session that joins no namespace in time is closed.

Each refusal is counted in ``realtime_connection_refusals_total{reason}`` (subscriptions in
``realtime_subscription_refusals_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import WSCloseCode, WSMsgType, web

from realtime_contract import NAMESPACE_ROLES

from .observability.metrics import GatewayMetrics
from .ratelimit import RateLimiter, RateRule
from .tasks import stop_tasks

log = logging.getLogger(__name__)

CAPACITY: Final = "CAPACITY"
RATE_LIMITED: Final = "RATE_LIMITED"
LIMIT_EXCEEDED: Final = "LIMIT_EXCEEDED"
# The handshake watchdog re-checks sessions already seen in a namespace every this many passes.
FULL_PASS_EVERY: Final = 10


@dataclass(frozen=True, slots=True)
class ProtectionConfig:
    max_connections: int = 5000
    # Connection attempts per client IP; None leaves per-IP limiting to the ingress.
    connect_rate: RateRule | None = None
    # e.g. "X-Forwarded-For"; only set it when every request passes through that proxy.
    trusted_proxy_header: str | None = None
    # How many proxies you run that append to the header: the client is that many from the right.
    trusted_proxy_hops: int = 1
    max_payload_bytes: int = 64 * 1024
    max_subscriptions: int = 100
    handshake_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a connect was refused: ``code`` for the client, ``reason`` for the metric."""

    code: str
    message: str
    reason: str
    retry_after_ms: int | None = None

    def as_connect_error(self) -> dict[str, Any]:
        data: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.retry_after_ms is not None:
            data["retryAfterMs"] = self.retry_after_ms
        return data


def client_ip(environ: Mapping[str, Any], config: ProtectionConfig) -> str:
    """The client's address: the peer, or from the trusted proxy header when one is configured."""
    if config.trusted_proxy_header:
        env_key = "HTTP_" + config.trusted_proxy_header.upper().replace("-", "_")
        raw = environ.get(env_key)
        if isinstance(raw, str):
            hops = [p.strip() for p in raw.split(",") if p.strip()]
            if hops:
                # The rightmost entries were written by our own proxies; anything further left
                # is whatever the client claimed, so it must not be trusted.
                return hops[max(0, len(hops) - max(1, config.trusted_proxy_hops))]
    request = environ.get("aiohttp.request")
    # engineio's aiohttp driver hard-codes REMOTE_ADDR; the real peer is on the request.
    remote = getattr(request, "remote", None) if request is not None else None
    return str(remote or environ.get("REMOTE_ADDR") or "unknown")


class ConnectionGate:
    """Admission control for namespace connects on this instance."""

    def __init__(
        self,
        config: ProtectionConfig,
        limiter: RateLimiter,
        metrics: GatewayMetrics | None = None,
        *,
        connections: Callable[[], int],
    ) -> None:
        self.config = config
        self._limiter = limiter
        self._metrics = metrics
        # The sockets registered right now: the handlers' own table is the single source.
        self._connections = connections
        self.draining = False

    async def admit(self, environ: Mapping[str, Any]) -> Refusal | None:
        """None when a new connection may proceed, else why not (already counted in metrics)."""
        refusal = await self._check(environ)
        if refusal is not None:
            if self._metrics is not None:
                self._metrics.refused(refusal.reason)
            log.info("connection refused", extra={"code": refusal.code, "reason": refusal.reason})
        return refusal

    async def _check(self, environ: Mapping[str, Any]) -> Refusal | None:
        if self.draining:
            return Refusal(CAPACITY, "instance is draining, connect to another", "DRAINING")
        if self._connections() >= self.config.max_connections:
            return Refusal(CAPACITY, "instance is at its connection limit", CAPACITY)
        if self.config.connect_rate is None:
            return None
        decision = await self._limiter.hit(client_ip(environ, self.config), "connect")
        if not decision.allowed:
            return Refusal(
                RATE_LIMITED,
                f"too many connection attempts, retry in {decision.retry_after_ms} ms",
                RATE_LIMITED,
                decision.retry_after_ms,
            )
        return None

    def allow_subscription(self, current: int) -> bool:
        """Whether a socket holding ``current`` subscriptions may add one more."""
        if current < self.config.max_subscriptions:
            return True
        if self._metrics is not None:
            self._metrics.subscriptions_refused.inc()
        return False


# --- payload size ---------------------------------------------------------------------------------
class LiveWebSockets:
    """The WebSocket transports open on this instance, so a drain can close them cleanly."""

    def __init__(self) -> None:
        self._open: set[Any] = set()

    def __len__(self) -> int:
        return len(self._open)

    def add(self, ws: Any) -> None:
        self._open.add(ws)

    def discard(self, ws: Any) -> None:
        self._open.discard(ws)

    async def close_all(self, code: int, message: str, spread_s: float = 0.0, batches: int = 10) -> int:
        """Close every open WebSocket with ``code``, in batches spread over ``spread_s`` seconds."""
        targets = list(self._open)
        if not targets:
            return 0
        size = max(1, -(-len(targets) // batches))
        chunks = [targets[i : i + size] for i in range(0, len(targets), size)]
        pause = spread_s / len(chunks) if spread_s > 0 else 0.0
        for n, chunk in enumerate(chunks):
            await asyncio.gather(*(self._close(ws, code, message) for ws in chunk))
            if pause and n < len(chunks) - 1:
                await asyncio.sleep(pause)
        return len(targets)

    @staticmethod
    async def _close(ws: Any, code: int, message: str) -> None:
        sock = getattr(ws, "_sock", None)
        if sock is not None and not sock.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sock.close(code=code, message=message.encode()), 2.0)


def install_transport_guard(sio: Any, on_oversize: Callable[[], None]) -> LiveWebSockets:
    """Track open WebSockets and count frames over ``max_http_buffer_size`` (closed with 1009).

    Engine.IO reads frames through its driver's WebSocket class; a subclass sees the error message
    aiohttp returns for an oversize frame. The driver table is copied so other servers in the
    process keep theirs.
    """
    live = LiveWebSockets()
    eio = sio.eio
    base = eio._async["websocket"]
    if base is None:
        return live

    class GuardedWebSocket(base):  # type: ignore[misc, valid-type]
        async def __call__(self, environ: Any) -> Any:
            live.add(self)
            try:
                return await super().__call__(environ)
            finally:
                live.discard(self)

        async def wait(self) -> Any:
            return self.data_of(await self._sock.receive())

        def data_of(self, msg: Any) -> Any:
            """The frame's data as the driver's ``wait`` returns it (the direct transport reads
            frames itself and hands each message here)."""
            if msg.type == WSMsgType.ERROR and getattr(msg.data, "code", None) == WSCloseCode.MESSAGE_TOO_BIG:
                on_oversize()
            if not isinstance(msg.data, bytes | str):
                raise OSError()
            return msg.data

    eio._async = {**eio._async, "websocket": GuardedWebSocket}
    return live


def install_payload_guard(
    app: web.Application, max_bytes: int, on_oversize: Callable[[], None], path_prefix: str = "/socket.io"
) -> None:
    """Count long-polling POSTs whose body exceeds the limit (Engine.IO answers 400, the session ends).

    A response-prepare hook rather than a middleware: an app without middlewares skips aiohttp's
    middleware chain, whose coroutine frames a WebSocket request otherwise keeps alive for the
    socket's whole life (about 1 KB per idle connection). Every such POST gets a response, so
    counting it there counts it once.
    """

    async def on_prepare(request: web.BaseRequest, response: web.StreamResponse) -> None:
        if (
            request.method == "POST"
            and (request.content_length or 0) > max_bytes
            and request.path.startswith(path_prefix)
        ):
            on_oversize()

    app.on_response_prepare.append(on_prepare)


# --- handshake timeout ----------------------------------------------------------------------------
class HandshakeWatchdog:
    """Closes Engine.IO sessions that join no namespace within ``timeout_s``.

    Socket.IO clients send the namespace CONNECT right after the Engine.IO handshake; a session
    that never does only holds a slot (a slowloris on the Socket.IO layer).
    """

    def __init__(
        self,
        sio: Any,
        timeout_s: float,
        metrics: GatewayMetrics | None = None,
        namespaces: Iterable[str] = (*NAMESPACE_ROLES, "/"),
        interval_s: float | None = None,
    ) -> None:
        self._sio = sio
        self._timeout = timeout_s
        self._metrics = metrics
        self._namespaces = tuple(namespaces)
        self._interval = interval_s if interval_s is not None else max(0.05, min(1.0, timeout_s / 4))
        self._first_seen: dict[str, float] = {}
        # Sessions seen in a namespace: skipped by most passes (see sweep).
        self._joined_sids: set[str] = set()
        self._passes = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None and self._timeout > 0:
            self._task = asyncio.create_task(self._run(), name="handshake-watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_tasks(self._task)
            self._task = None

    def _joined(self, eio_sid: str) -> bool:
        manager = self._sio.manager
        return any(manager.sid_from_eio_sid(eio_sid, ns) is not None for ns in self._namespaces)

    async def sweep(self) -> int:
        """One pass; returns how many sessions were closed.

        A session once seen in a namespace is only looked at again every ``FULL_PASS_EVERY``
        passes (a client that left every namespace but kept its Engine.IO session is still
        closed, a few seconds later): looking up every session in every namespace each second
        cost tens of milliseconds per second at 15,000 sockets. The other passes cost two set
        operations over the sessions plus a look at the new ones.
        """
        now = time.monotonic()
        live = self._sio.eio.sockets.keys()
        self._passes += 1
        if self._passes % FULL_PASS_EVERY == 0:
            self._joined_sids.clear()
        else:
            self._joined_sids.intersection_update(live)
        for gone in self._first_seen.keys() - live:
            del self._first_seen[gone]
        closed = 0
        for eio_sid in live - self._joined_sids:
            if self._joined(eio_sid):
                self._joined_sids.add(eio_sid)
                self._first_seen.pop(eio_sid, None)
                continue
            first = self._first_seen.setdefault(eio_sid, now)
            if now - first >= self._timeout:
                self._first_seen.pop(eio_sid, None)
                with contextlib.suppress(Exception):
                    await self._sio.eio.disconnect(eio_sid)
                closed += 1
                if self._metrics is not None:
                    self._metrics.refused("HANDSHAKE_TIMEOUT")
        return closed

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("handshake watchdog sweep failed")
