"""Joins recovery, the offline queue, presence and the Redis breaker to the gateway's seams.

``app.build_gateway`` builds the fan-out manager as :class:`HoldingManager` and the emitter as
:class:`ReliableEmitter`, then calls ``install_reliability(gateway)`` once, after every other
part registered its client events. From then on:

- a connecting socket's ``auth.recover`` (``{orderId: {offset, epoch}}``) is read by a connect
  guard; once the CONNECT and ``session`` went out, the socket is marked online, its offline
  queue is sent, the missed events of each presented order are replayed, and ``recovered`` is
  emitted per order; room events that arrived meanwhile follow (see ``recovery/manager.py``);
- client events ``chat:history`` (members) and ``presence:query`` (admins) are registered;
- a porter's first device connecting / last device leaving emits ``porter:presence`` to the
  porter's order rooms;
- with Redis: every client event gets a deadline and the breaker (``UNAVAILABLE``), and live
  sockets' state is written again when Redis comes back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Annotated, Any, Final

from pydantic import Field, ValidationError
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from realtime_gateway.auth import authz
from realtime_gateway.fanout.emitter import order_room
from realtime_gateway.offline.queue import MemoryOfflineQueue, OfflineQueue, RedisOfflineQueue
from realtime_gateway.presence.store import HEARTBEAT_S, MemoryPresence, PresenceStore, RedisPresence
from realtime_gateway.recovery.emitter import ReliableEmitter
from realtime_gateway.recovery.history import HistoryStore, MemoryHistory, Position, RedisHistory
from realtime_gateway.recovery.manager import HoldingManager
from realtime_gateway.recovery.resilience import PROBE_TIMEOUT_S, RedisBreaker
from realtime_gateway.state.base import ReconnectGrant, SocketRecord
from realtime_gateway.state.connect import tls_options
from realtime_gateway.tasks import Background, stop_tasks
from realtime_gateway.transport.acks import Ack, ErrorCode, err, ok
from realtime_gateway.transport.payloads import Id, _Payload, parse

if TYPE_CHECKING:
    from realtime_gateway.app import Gateway
    from realtime_gateway.transport.handlers import Conn

log = logging.getLogger(__name__)

RECOVER_ENVIRON_KEY: Final = "rtg.recover"
MAX_RECOVER_ORDERS: Final = 100
PORTER_PRESENCE: Final = "porter:presence"
RECOVERED: Final = "recovered"


class ChatHistoryRequest(_Payload):
    orderId: Id
    before: Annotated[int, Field(ge=1)] | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 50


class PresenceQuery(_Payload):
    userIds: Annotated[list[Id], Field(min_length=1, max_length=100)]


class RecoverPosition(_Payload):
    offset: Annotated[int, Field(ge=0)]
    epoch: Annotated[str, Field(max_length=64)] = ""


def parse_recover(auth: Any) -> dict[str, Position]:
    """``auth.recover`` as positions; malformed entries are dropped (the client gets no replay
    for them, and ``recovered: false``)."""
    raw = auth.get("recover") if isinstance(auth, dict) else None
    if not isinstance(raw, dict):
        return {}
    out: dict[str, Position] = {}
    for order_id, value in list(raw.items())[:MAX_RECOVER_ORDERS]:
        if not isinstance(order_id, str) or not 0 < len(order_id) <= 128 or not isinstance(value, dict):
            continue
        try:
            pos = RecoverPosition.model_validate(value)
        except ValidationError:
            out[order_id] = Position("", -1)
            continue
        out[order_id] = Position(pos.epoch, pos.offset)
    return out


class Reliability:
    def __init__(
        self,
        gateway: Gateway,
        history: HistoryStore,
        presence: PresenceStore,
        offline: OfflineQueue,
    ) -> None:
        self.gateway = gateway
        self.handlers = gateway.handlers
        self.sio = gateway.sio
        self.stores = gateway.stores
        self.emitter = gateway.emitter
        self.history = history
        self.presence = presence
        self.offline = offline
        self.breaker: RedisBreaker | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background = Background("reliability")

    # --- connect ----------------------------------------------------------------------------
    async def remember_recover(self, namespace: str, environ: dict[str, Any], auth: Any) -> None:
        """Connect guard: keep ``auth.recover`` for the after-connect step (never refuses)."""
        wanted = parse_recover(auth)
        if wanted:
            environ.setdefault(RECOVER_ENVIRON_KEY, {})[namespace] = wanted

    async def on_connected(self, sid: str, namespace: str) -> dict[str, Position]:
        conn = self.handlers.conns.get(sid)
        if conn is None:
            return {}
        user_id = conn.claims.user_id
        if await self.presence.connected(user_id, sid) and conn.claims.role == "porter":
            await self._announce_porter(user_id, online=True, last_seen=None)
        await self._drain_offline(conn)
        environ = self.sio.get_environ(sid, namespace) or {}
        wanted: dict[str, Position] = environ.get(RECOVER_ENVIRON_KEY, {}).pop(namespace, {})
        replayed: dict[str, Position] = {}
        for order_id, client in wanted.items():
            if order_id in conn.orders and client.offset >= 0:
                result = await self.history.recover(order_id, client)
            else:
                result = None
            if result is not None and result.recovered:
                for entry in result.events:
                    await self.sio.emit(entry.event, entry.data, to=sid, namespace=namespace)
                replayed[order_room(order_id)] = result.position
            body: dict[str, Any] = {"orderId": order_id, "recovered": bool(result and result.recovered)}
            if result is not None:
                body |= {"epoch": result.position.epoch, "offset": result.position.offset}
            await self.sio.emit(RECOVERED, body, to=sid, namespace=namespace)
        return replayed

    async def _drain_offline(self, conn: Conn) -> None:
        user_id = conn.claims.user_id
        for item in await self.offline.pending(user_id):

            def acked(*_: Any, item: Any = item) -> None:
                self._background.spawn(self.offline.remove(user_id, item))

            await self.sio.emit(item.event, item.data, to=conn.sid, namespace=conn.namespace, callback=acked)

    # --- disconnect (an observer) -------------------------------------------------------------
    def on_event(self, conn: Conn | None, event: str, ack: Ack, seconds: float) -> None:
        return None

    def on_connect(self, conn: Conn) -> None:
        return None

    def on_auth_error(self, namespace: str, code: str) -> None:
        return None

    def on_disconnect(self, conn: Conn) -> None:
        self._background.spawn(self._went_away(conn.claims.user_id, conn.claims.role, conn.sid))

    async def _went_away(self, user_id: str, role: str, sid: str) -> None:
        last_seen = await self.presence.disconnected(user_id, sid)
        if last_seen is not None and role == "porter":
            await self._announce_porter(user_id, online=False, last_seen=last_seen)

    async def _announce_porter(self, porter_id: str, *, online: bool, last_seen: int | None) -> None:
        for order_id in sorted(await self.stores.orders.orders_of_porter(porter_id)):
            data = {"orderId": order_id, "porterId": porter_id, "online": online, "lastSeen": last_seen}
            await self.emitter.to_order(order_id, PORTER_PRESENCE, data)

    # --- client events ------------------------------------------------------------------------
    async def chat_history(self, conn: Conn, data: Any) -> Ack:
        payload = parse(ChatHistoryRequest, data)
        decision = authz.can_chat(conn.claims, await self.stores.orders.get(payload.orderId))
        if not decision.allowed:
            return err(decision.code, decision.message)
        entries = await self.history.chat(payload.orderId, payload.before, payload.limit)
        messages = [e.data for e in entries]
        return ok(orderId=payload.orderId, messages=messages, hasMore=len(messages) == payload.limit)

    async def presence_query(self, conn: Conn, data: Any) -> Ack:
        if not conn.claims.is_admin:
            return err(ErrorCode.FORBIDDEN, "only admins query presence")
        payload = parse(PresenceQuery, data)
        found = await self.presence.query(list(dict.fromkeys(payload.userIds)))
        return ok(presence={p.user_id: p.wire() for p in found})

    # --- background ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._heartbeat(), name="presence-heartbeat"))
        if self.breaker is not None:
            self.breaker.start()

    async def stop(self) -> None:
        await stop_tasks(*self._tasks)
        if self.breaker is not None:
            await self.breaker.stop()
        await self._background.wait(2)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            sockets = [(c.claims.user_id, c.sid) for c in list(self.handlers.conns.values())]
            try:
                await self.presence.refresh(sockets)
            except Exception as exc:
                log.warning("presence heartbeat failed: %r", exc)

    async def rebuild(self, lost: bool) -> None:
        """Write every live socket's state again (after Redis came back)."""
        handlers = self.handlers
        for conn in list(handlers.conns.values()):
            claims = conn.claims
            await self.stores.sessions.register(
                SocketRecord(conn.sid, claims.user_id, claims.role, conn.namespace, handlers.instance_id)
            )
            if lost:
                grant = ReconnectGrant(
                    claims.user_id, claims.role, conn.namespace, claims.expires_at, frozenset(conn.orders)
                )
                conn.reconnect_token = await self.stores.reconnect.issue(grant, handlers.reconnect_ttl)
            # A copy: the socket's subscribes (or its connect's restore) may change the set meanwhile.
            for order_id in list(conn.orders):
                await self.stores.subscriptions.add(order_id, conn.sid, conn.reconnect_token)
            await self.presence.connected(claims.user_id, conn.sid)
            if lost and conn.announced:
                # Last: a client told its new session finds the state behind it written already.
                # A socket still connecting gets the new token in its connect's own session.
                ttl = max(1, min(handlers.reconnect_ttl, int(claims.expires_at - time.time())))
                session = {
                    "userId": claims.user_id,
                    "role": claims.role,
                    "reconnectToken": conn.reconnect_token,
                    "reconnectTokenExpiresIn": ttl,
                    "subscriptions": sorted(conn.orders),
                }
                await self.sio.emit("session", session, to=conn.sid, namespace=conn.namespace)
        manager = self.gateway.manager
        if isinstance(manager, HoldingManager):
            await manager.catch_up()


def _probe_client(gateway: Gateway) -> Any:
    """A client with its own small pool for the breaker's PING (standalone Redis), so a probe
    never queues behind busy command connections; Sentinel and Cluster use the command client."""
    endpoint = gateway.settings.redis_endpoint
    if gateway.settings.redis_mode != "standalone" or endpoint is None:
        return None
    host, port = endpoint.hosts[0]
    return Redis.from_url(
        endpoint.url_for(host, port),
        socket_connect_timeout=PROBE_TIMEOUT_S,
        socket_timeout=PROBE_TIMEOUT_S,
        max_connections=2,
        retry=Retry(NoBackoff(), 0),  # a refused connection is an answer, not a reason to wait
        **tls_options(endpoint),
    )


def install_reliability(gateway: Gateway) -> Reliability:
    """Called once at the end of ``build_gateway`` (after the other parts registered events)."""
    manager, emitter = gateway.manager, gateway.emitter
    assert isinstance(manager, HoldingManager), "build the fan-out manager as HoldingManager"
    assert isinstance(emitter, ReliableEmitter), "build the emitter as ReliableEmitter"
    history: HistoryStore
    presence: PresenceStore
    offline: OfflineQueue
    if gateway.redis is None:
        history, presence = MemoryHistory(), MemoryPresence()
        offline = MemoryOfflineQueue(presence)
    else:
        client = gateway.redis.commands
        history = RedisHistory(client, fast=gateway.redis.fast)
        presence, offline = RedisPresence(client, fast=gateway.redis.fast), RedisOfflineQueue(client)
        emitter.history_publishes = True
        manager.history = history
    emitter.history, emitter.offline = history, offline
    rel = Reliability(gateway, history, presence, offline)
    manager.on_connected = rel.on_connected
    handlers = gateway.handlers
    handlers.connect_guards.append(rel.remember_recover)
    handlers.observers.append(rel)
    handlers.register_event("chat:history", rel.chat_history)
    handlers.register_event("presence:query", rel.presence_query)
    if gateway.redis is not None:
        probe = _probe_client(gateway)
        rel.breaker = breaker = RedisBreaker(
            gateway.redis.commands, gateway.settings.instance_id, rel.rebuild, probe=probe
        )
        handlers.event_guards.insert(0, breaker.guard)
        for name, fn in list(handlers.events.items()):
            # Bound to the socket server by ``handlers.install()`` in ``create_app``.
            handlers.events[name] = breaker.guarded(name, fn)
        # A guarded call's deadline cancels the task it runs in: event frames are handled in
        # their connection's reader task, not inline as they are parsed (transport/inline.py).
        gateway.sio.inline_events = False
        gateway.readiness_checks["redis-breaker"] = breaker.ready
    gateway.on_startup.append(rel.start)
    gateway.on_shutdown.insert(0, rel.stop)
    return rel


__all__ = ["HoldingManager", "Reliability", "ReliableEmitter", "install_reliability"]
