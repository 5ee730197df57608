"""The only wiring module: builds settings-driven parts and joins them into one aiohttp app.

Seams for the other parts of the gateway (keep each addition a small, delimited block):
- ``Gateway.readiness_checks``: ``name -> async () -> bool``; /readyz is 200 only if all pass;
- ``Gateway.handlers``: ``connect_guards`` / ``event_guards`` / ``observers`` / ``register_event``
  / ``location_sink`` (see transport/handlers.py);
- ``Gateway.on_startup`` / ``Gateway.on_shutdown``: async callables run in order at start / stop
  (Kafka consumers and producers, tracing exporters);
- ``install_operations`` (observability/wiring.py) serves ``METRICS_PATH`` and owns the drain.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import socketio
from aiohttp import web

from realtime_contract import EVENTS_API_PATH, HEALTHZ_PATH, METRICS_PATH, READYZ_PATH
from realtime_gateway.auth.expiry import SessionExpiry
from realtime_gateway.auth.verifier import TokenVerifier
from realtime_gateway.fanout.bus import RedisShardedBus
from realtime_gateway.fanout.emitter import Emitter
from realtime_gateway.fanout.manager import RoomFanoutManager
from realtime_gateway.ingest.bridge import IngestBridge
from realtime_gateway.ingest.kafka_config import kafka_config_from_settings
from realtime_gateway.observability.wiring import OPERATIONS_KEY, install_operations, metrics_response
from realtime_gateway.recovery.wiring import HoldingManager, ReliableEmitter, install_reliability
from realtime_gateway.settings import Settings
from realtime_gateway.state.base import Stores
from realtime_gateway.state.connect import RedisHandles, open_redis
from realtime_gateway.state.memory import memory_stores
from realtime_gateway.state.redis_store import redis_stores
from realtime_gateway.transport.handlers import GatewayHandlers
from realtime_gateway.transport.server import create_server

log = logging.getLogger(__name__)

GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway")
Hook = Callable[[], Awaitable[None]]


@dataclass(eq=False)
class Gateway:
    settings: Settings
    sio: socketio.AsyncServer
    manager: RoomFanoutManager
    emitter: Emitter
    stores: Stores
    verifier: TokenVerifier
    handlers: GatewayHandlers
    redis: RedisHandles | None = None
    readiness_checks: dict[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)
    on_startup: list[Hook] = field(default_factory=list)
    on_shutdown: list[Hook] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    draining: bool = False
    ingest: IngestBridge | None = None

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, bool] = {}
        for name, check in self.readiness_checks.items():
            try:
                checks[name] = bool(await check())
            except Exception:
                checks[name] = False
        ready = not self.draining and all(checks.values())
        body = {
            "ready": ready,
            "instance": self.settings.instance_id,
            "mode": "embedded" if self.settings.embedded else f"redis-{self.settings.redis_mode}",
            "checks": checks,
            "connections": len(self.handlers.conns),
            "fanout": self.manager.stats(),
        }
        return ready, body


def build_verifier(settings: Settings) -> TokenVerifier:
    return TokenVerifier(
        secret=settings.effective_jwt_secret,
        public_key_pem=settings.jwt_public_key,
        jwks_url=settings.jwt_jwks_url,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway=settings.jwt_leeway_seconds,
        jwks_cooldown=settings.jwt_jwks_refresh_cooldown_seconds,
    )


def build_gateway(settings: Settings) -> Gateway:
    """Create every part; nothing connects yet (that happens in ``start``)."""
    redis: RedisHandles | None = None
    if settings.embedded:
        stores = memory_stores()
        manager = HoldingManager(bus=None)
    else:
        endpoint = settings.redis_endpoint
        assert endpoint is not None
        redis = open_redis(settings.redis_mode, endpoint, settings.redis_sentinel_master)
        stores = redis_stores(
            redis.commands,
            session_ttl=settings.session_ttl_seconds,
            order_access_ttl=settings.order_access_ttl_seconds,
            reconnect_ttl=settings.reconnect_token_ttl_seconds,
            fast=redis.fast,
        )
        manager = HoldingManager(
            RedisShardedBus(redis.publisher, redis.node_for_channel, redis.client_for_node, redis.fast)
        )
    sio = create_server(settings, manager)
    emitter = ReliableEmitter(manager)  # recovery offsets, offline queue (recovery/)
    verifier = build_verifier(settings)
    handlers = GatewayHandlers(
        sio=sio,
        manager=manager,
        emitter=emitter,
        stores=stores,
        verifier=verifier,
        instance_id=settings.instance_id,
        reconnect_ttl=settings.reconnect_token_ttl_seconds,
        location_max_skew=settings.location_max_skew_seconds,
        # Renew key TTLs well before they run out (they only matter for a dead instance's sockets).
        keepalive_interval=max(
            1.0, min(settings.session_ttl_seconds, settings.reconnect_token_ttl_seconds) / 3
        ),
    )
    gateway = Gateway(settings, sio, manager, emitter, stores, verifier, handlers, redis)
    gateway.on_startup.append(handlers.start_keepalive)
    gateway.on_shutdown.append(handlers.stop_keepalive)
    # Sockets end when their token does (auth/expiry.py).
    expiry = SessionExpiry(sio, settings.jwt_leeway_seconds)
    handlers.observers.append(expiry)
    gateway.on_shutdown.append(expiry.stop)
    if redis is not None:
        gateway.readiness_checks["redis"] = redis.ping
    # --- Kafka bridge, POST /api/events, chat, job offers, typing (ingest/) ---
    ingest = IngestBridge(
        kafka=None if settings.embedded else kafka_config_from_settings(settings),
        redis=redis.commands if redis is not None else None,
        fast=redis.fast if redis is not None else None,
        emitter=emitter,
        access=stores.orders,
        verify=verifier.verify,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
    )
    ingest.install(handlers)
    gateway.ingest = ingest
    gateway.on_startup.append(ingest.start)
    gateway.on_shutdown.append(ingest.stop)
    if ingest.kafka is not None:
        gateway.readiness_checks["kafka"] = ingest.ready
    # --- end ingest ---
    # --- recovery, offline queue, presence, Redis breaker (recovery/wiring.py); keep last ---
    install_reliability(gateway)
    # --- end reliability ---
    return gateway


def create_app(gateway: Gateway) -> web.Application:
    app = web.Application()
    app[GATEWAY_KEY] = gateway
    gateway.handlers.install()
    # --- protection and observability: limits, metrics, tracing, drain (observability/wiring.py) ---
    install_operations(gateway, app)
    # --- end protection and observability ---
    gateway.sio.attach(app)
    app.router.add_get(HEALTHZ_PATH, healthz)
    app.router.add_get(READYZ_PATH, readyz)
    app.router.add_get(METRICS_PATH, metrics_handler)
    if gateway.ingest is not None:
        app.router.add_post(EVENTS_API_PATH, gateway.ingest.events_api.handle)
        gateway.ingest.instrument(app[OPERATIONS_KEY].metrics, app[OPERATIONS_KEY].tracing)
    if gateway.settings.serve_dev_page:
        app.router.add_get("/", dev_page)
    app.on_startup.append(_startup)
    app.on_shutdown.append(_shutdown)
    return app


async def _startup(app: web.Application) -> None:
    gateway = app[GATEWAY_KEY]
    if gateway.redis is not None:
        await gateway.redis.start()
    for hook in gateway.on_startup:
        await hook()


async def _shutdown(app: web.Application) -> None:
    gateway = app[GATEWAY_KEY]
    gateway.draining = True
    for hook in gateway.on_shutdown:
        try:
            await hook()
        except Exception:
            log.exception("shutdown hook failed")
    if gateway.manager.bus is not None:
        await gateway.manager.bus.aclose()
    if gateway.redis is not None:
        await gateway.redis.aclose()


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP. Dependencies are /readyz's business."""
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    ready, body = await request.app[GATEWAY_KEY].readiness()
    return web.json_response(body, status=200 if ready else 503)


async def metrics_handler(request: web.Request) -> web.Response:
    return await metrics_response(request)


async def dev_page(request: web.Request) -> web.Response:
    html = resources.files("realtime_gateway").joinpath("devpage.html").read_text()
    return web.Response(text=html, content_type="text/html")
