"""Socket handlers for all three namespaces.

Each event handler reads top to bottom: parse the payload → take the claims saved at connect →
ask one pure authorization function → do one effect through a store or the fan-out → ack.
Nothing raises into python-socketio: a bug becomes an INTERNAL ack; a rejected call changes no
state. Failed acks are mirrored by an ``error`` event.

Extension seams (used by the Kafka and protection/observability parts):
- ``register_event(name, fn)``: add a client event, ``fn(conn, data) -> Ack``;
- ``connect_guards``: ``await guard(namespace, environ, auth)``; raise ``AuthError`` to refuse;
- ``event_guards``: ``await guard(conn, event, data) -> Ack | None``; an Ack refuses the call;
- ``observers``: ``observer.on_event(conn, event, ack, seconds)``, ``on_connect(conn)``,
  ``on_disconnect(conn)``, ``on_auth_error(namespace, code)``;
- ``location_sink.on_location_stored(porter_id, location, order_ids)`` (Kafka sampling).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import socketio

from realtime_contract import NAMESPACE_ROLES
from realtime_gateway.auth import authz
from realtime_gateway.auth.claims import SOCKET_ROLES, Claims
from realtime_gateway.auth.errors import AuthError, ConnectCode
from realtime_gateway.auth.verifier import TokenVerifier
from realtime_gateway.fanout.emitter import (
    ADMINS_ROOM,
    FINAL_STATUS_FIELD,
    ORDER_STATUS,
    Emitter,
    order_of_room,
    order_room,
    user_room,
)
from realtime_gateway.fanout.manager import RoomFanoutManager
from realtime_gateway.state.base import LiveSocket, ReconnectGrant, SocketRecord, Stores
from realtime_gateway.tasks import Background, stop_tasks
from realtime_gateway.transport.acks import Ack, ErrorCode, err, error_event, is_error, ok
from realtime_gateway.transport.payloads import (
    OrderRef,
    PayloadError,
    parse,
    parse_location,
    timestamp_plausible,
)

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class Conn:
    """What the gateway keeps per socket in memory (kept small on purpose)."""

    sid: str
    namespace: str
    claims: Claims
    reconnect_token: str
    orders: set[str] = field(default_factory=set)
    # Its ``session`` event is on its way: a rebuild after a Redis data loss tells it the new token
    # only from then on (before that, the connect's own ``session`` carries it).
    announced: bool = False


EventFn = Callable[[Conn, Any], Awaitable[Ack]]
ConnectGuard = Callable[[str, dict[str, Any], Any], Awaitable[None]]
EventGuard = Callable[[Conn, str, Any], Awaitable[Ack | None]]
# A guard's synchronous form for one event: ``sync(conn, data)`` answers what
# ``await guard(conn, event, data)`` would, without a coroutine. A guard offers it through an
# attribute ``sync_for(event) -> SyncGuard | None`` (None: that event needs the coroutine).
SyncGuard = Callable[[Conn, Any], Ack | None]


def _sync_form(guard: EventGuard, event: str) -> SyncGuard | None:
    sync_for = getattr(guard, "sync_for", None)
    return sync_for(event) if sync_for is not None else None


class LocationSink(Protocol):
    async def on_location_stored(
        self, porter_id: str, location: dict[str, Any], order_ids: set[str]
    ) -> None: ...


class NoLocationSink:
    async def on_location_stored(self, porter_id: str, location: dict[str, Any], order_ids: set[str]) -> None:
        return None


class Observer(Protocol):
    def on_event(self, conn: Conn | None, event: str, ack: Ack, seconds: float) -> None: ...
    def on_connect(self, conn: Conn) -> None: ...
    def on_disconnect(self, conn: Conn) -> None: ...
    def on_auth_error(self, namespace: str, code: str) -> None: ...


_NO_PAYLOAD = object()


def _no_scope(event: str, namespace: str) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


def refusal(code: str, message: str) -> socketio.exceptions.ConnectionRefusedError:
    """connect_error data ``{"code", "message"}``; ``data`` repeats it for the JS client's ``err.data``."""
    exc = socketio.exceptions.ConnectionRefusedError(message)
    exc.error_args = {"code": str(code), "message": message, "data": {"code": str(code), "message": message}}
    return exc


def _bearer(environ: dict[str, Any]) -> str | None:
    header = environ.get("HTTP_AUTHORIZATION")
    if isinstance(header, str) and header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


class GatewayHandlers:
    def __init__(
        self,
        *,
        sio: socketio.AsyncServer,
        manager: RoomFanoutManager,
        emitter: Emitter,
        stores: Stores,
        verifier: TokenVerifier,
        instance_id: str,
        reconnect_ttl: int,
        location_max_skew: float,
        location_sink: LocationSink | None = None,
        keepalive_interval: float = 3600.0,
    ) -> None:
        self.sio = sio
        self.manager = manager
        self.emitter = emitter
        self.stores = stores
        self.verifier = verifier
        self.instance_id = instance_id
        self.reconnect_ttl = reconnect_ttl
        self.location_max_skew = location_max_skew
        self.location_sink: LocationSink = location_sink or NoLocationSink()
        self.conns: dict[str, Conn] = {}
        self.keepalive_interval = keepalive_interval
        self._keepalive_task: asyncio.Task[None] | None = None
        self._endings = Background("order ending")
        self.connect_guards: list[ConnectGuard] = []
        self.event_guards: list[EventGuard] = []
        self.observers: list[Observer] = []
        # Entered around each client event (tracing span, correlation id for the logs).
        self.event_scope: Callable[[str, str], contextlib.AbstractContextManager[Any]] = _no_scope
        self.events: dict[str, EventFn] = {
            "order:subscribe": self.order_subscribe,
            "order:unsubscribe": self.order_unsubscribe,
            "location:update": self.location_update,
        }

    # --- wiring ------------------------------------------------------------------------------
    def register_event(self, name: str, fn: EventFn) -> None:
        self.events[name] = fn
        self.sio.on(name, self._wrap(name, fn), namespace="*")

    def install(self) -> None:
        self.manager.after_delivery[ORDER_STATUS] = self._after_order_status
        self.sio.on("connect", self.on_connect, namespace="*")
        self.sio.on("disconnect", self.on_disconnect, namespace="*")
        for name, fn in self.events.items():
            self.sio.on(name, self._wrap(name, fn), namespace="*")
        self.sio.on("*", self.on_unknown_event, namespace="*")

    # --- connect / disconnect -----------------------------------------------------------------
    async def on_connect(self, namespace: str, sid: str, environ: dict[str, Any], auth: Any) -> None:
        try:
            for guard in self.connect_guards:
                await guard(namespace, environ, auth)
            claims, restore = await self._authenticate(namespace, environ, auth)
        except AuthError as exc:
            for observer in self.observers:
                observer.on_auth_error(namespace, str(exc.code))
            raise refusal(exc.code, exc.message) from None
        try:
            conn = await self._open(namespace, sid, claims, restore)
        except Exception:
            log.exception("cannot register socket")
            await self._close(sid)
            raise refusal(ConnectCode.UNAVAILABLE, "state store unavailable, retry") from None
        for observer in self.observers:
            observer.on_connect(conn)
        self.manager.after_connect(sid, lambda: self._send_session(conn))

    async def _authenticate(
        self, namespace: str, environ: dict[str, Any], auth: Any
    ) -> tuple[Claims, frozenset[str]]:
        """Credentials, first match wins: auth.token, auth.reconnectToken, Authorization: Bearer."""
        auth = auth if isinstance(auth, dict) else {}
        token, reconnect = auth.get("token"), auth.get("reconnectToken")
        expected_role = NAMESPACE_ROLES.get(namespace)
        if isinstance(token, str) and token:
            claims = await self.verifier.verify(token)
            restore: frozenset[str] = frozenset()
        elif isinstance(reconnect, str) and reconnect:
            if len(reconnect) > 128:
                raise AuthError(ConnectCode.AUTH_INVALID, "unknown reconnect token")
            grant = await self.stores.reconnect.consume(reconnect, namespace)
            if grant is None:
                raise AuthError(ConnectCode.AUTH_INVALID, "unknown or used reconnect token")
            if grant.expires_at < time.time():
                raise AuthError(ConnectCode.AUTH_EXPIRED, "session expired")
            if grant.namespace != namespace:
                raise AuthError(ConnectCode.FORBIDDEN_NAMESPACE, "reconnect token is for another namespace")
            claims = Claims(grant.user_id, grant.role, grant.expires_at)  # type: ignore[arg-type]
            restore = grant.orders
        elif (bearer := _bearer(environ)) is not None:
            claims = await self.verifier.verify(bearer)
            restore = frozenset()
        else:
            raise AuthError(ConnectCode.AUTH_REQUIRED, "no credentials")
        if claims.role not in SOCKET_ROLES or claims.role != expected_role:
            raise AuthError(ConnectCode.FORBIDDEN_NAMESPACE, f"role {claims.role} may not use {namespace}")
        return claims, restore

    async def _open(self, namespace: str, sid: str, claims: Claims, restore: frozenset[str]) -> Conn:
        grant = ReconnectGrant(claims.user_id, claims.role, namespace, claims.expires_at)
        token = await self.stores.reconnect.issue(grant, self.reconnect_ttl)
        conn = Conn(sid, namespace, claims, token)
        self.conns[sid] = conn
        await self.stores.sessions.register(
            SocketRecord(sid, claims.user_id, claims.role, namespace, self.instance_id)
        )
        await self.sio.enter_room(sid, user_room(claims.user_id), namespace=namespace)
        if claims.is_admin:
            await self.sio.enter_room(sid, ADMINS_ROOM, namespace=namespace)
        for order_id in sorted(restore):
            # Access may have changed while the client was away: authorize again.
            if authz.can_subscribe(claims, await self.stores.orders.get(order_id)).allowed:
                await self._join_order(conn, order_id)
        return conn

    async def _send_session(self, conn: Conn) -> None:
        conn.announced = True
        ttl = max(1, min(self.reconnect_ttl, int(conn.claims.expires_at - time.time())))
        session = {
            "userId": conn.claims.user_id,
            "role": conn.claims.role,
            "reconnectToken": conn.reconnect_token,
            "reconnectTokenExpiresIn": ttl,
            "subscriptions": sorted(conn.orders),
        }
        await self.sio.emit("session", session, to=conn.sid, namespace=conn.namespace)

    async def on_disconnect(self, namespace: str, sid: str, reason: Any = None) -> None:
        conn = self.conns.get(sid)
        if conn is not None:
            for observer in self.observers:
                observer.on_disconnect(conn)
        await self._close(sid)

    async def _close(self, sid: str) -> None:
        conn = self.conns.pop(sid, None)
        if conn is None:
            return
        try:
            # The reconnect token's lifetime counts from the disconnect, however long the socket lived.
            await self.stores.sessions.refresh([self._live(conn)])
            await self.stores.sessions.unregister(sid, conn.claims.user_id)
            await self.stores.subscriptions.drop_socket(sid, conn.orders)
        except Exception:  # the TTLs clean up what we could not
            log.warning("cleanup of socket %s failed", sid, exc_info=True)

    # --- TTL keepalive -------------------------------------------------------------------------
    def _live(self, conn: Conn) -> LiveSocket:
        ttl = max(1, min(self.reconnect_ttl, int(conn.claims.expires_at - time.time())))
        return LiveSocket(conn.sid, conn.claims.user_id, frozenset(conn.orders), conn.reconnect_token, ttl)

    async def refresh_ttls(self) -> None:
        """Renew the keys of every local socket, so the TTLs only fire for sockets of a dead instance."""
        await self.stores.sessions.refresh([self._live(conn) for conn in list(self.conns.values())])

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_interval)
            try:
                await self.refresh_ttls()
            except Exception:
                log.warning("TTL keepalive failed; retrying next round", exc_info=True)

    async def start_keepalive(self) -> None:
        if self._keepalive_task is None:
            self._keepalive_task = asyncio.create_task(self._keepalive(), name="ttl-keepalive")

    async def stop_keepalive(self) -> None:
        if self._keepalive_task is not None:
            await stop_tasks(self._keepalive_task)
            self._keepalive_task = None

    # --- event dispatch -----------------------------------------------------------------------
    def _wrap(self, event: str, fn: EventFn) -> Callable[..., Awaitable[Ack]]:
        """The handler python-socketio calls for ``event``: scope, guards, ``fn``, error event and
        observers in one coroutine (this runs for every client event, the GPS stream included).

        A guard may offer a synchronous form for one event (``guard.sync_for(event)``, see
        ``SyncGuard``): the same check without a coroutine per call. The forms are looked up
        again whenever the guard list changes."""
        known: list[EventGuard] = []  # the guard list the forms were made for
        forms: list[tuple[EventGuard, SyncGuard | None]] = []
        scope_of = self

        async def handler(namespace: str, sid: str, *args: Any) -> Ack:
            with scope_of.event_scope(event, namespace):
                started = time.perf_counter()
                conn = scope_of.conns.get(sid)
                data = args[0] if len(args) == 1 else _NO_PAYLOAD
                ack: Ack | None = None
                try:
                    if conn is None:
                        ack = err(ErrorCode.INTERNAL, "socket not registered")
                    else:
                        guards = scope_of.event_guards
                        if known != guards:
                            known[:] = guards
                            forms[:] = [(g, _sync_form(g, event)) for g in guards]
                        for guard, sync in forms:
                            ack = sync(conn, data) if sync is not None else await guard(conn, event, data)
                            if ack is not None:
                                break
                        if ack is None:
                            ack = await fn(conn, data)
                except PayloadError as exc:
                    ack = err(ErrorCode.VALIDATION, str(exc))
                except Exception:
                    log.exception("handler for %s failed", event)
                    ack = err(ErrorCode.INTERNAL, "internal error")
                if is_error(ack):
                    await scope_of._error_event(namespace, sid, event, ack)
                scope_of._observe(conn, event, ack, time.perf_counter() - started)
                return ack

        return handler

    async def _error_event(self, namespace: str, sid: str, event: str, ack: Ack) -> None:
        try:
            await self.sio.emit("error", error_event(ack, event), to=sid, namespace=namespace)
        except Exception:
            log.warning("cannot emit error event", exc_info=True)

    def _observe(self, conn: Conn | None, event: str, ack: Ack, elapsed: float) -> None:
        for observer in self.observers:
            try:
                observer.on_event(conn, event, ack, elapsed)
            except Exception:
                log.warning("observer failed", exc_info=True)

    async def _finish(
        self, conn: Conn | None, namespace: str, sid: str, event: str, ack: Ack, started: float
    ) -> None:
        if is_error(ack):
            await self._error_event(namespace, sid, event, ack)
        self._observe(conn, event, ack, time.perf_counter() - started)

    async def on_unknown_event(self, event: str, namespace: str, sid: str, *args: Any) -> Ack:
        started = time.perf_counter()
        ack = err(ErrorCode.VALIDATION, "unknown event")
        await self._finish(self.conns.get(sid), namespace, sid, str(event)[:64], ack, started)
        return ack

    # --- events -------------------------------------------------------------------------------
    async def order_subscribe(self, conn: Conn, data: Any) -> Ack:
        payload = parse(OrderRef, data)
        access = await self.stores.orders.get(payload.orderId)
        decision = authz.can_subscribe(conn.claims, access)
        if not decision.allowed:
            return err(decision.code, decision.message)
        if payload.orderId not in conn.orders:
            await self._join_order(conn, payload.orderId)
        return ok(orderId=payload.orderId)

    async def order_unsubscribe(self, conn: Conn, data: Any) -> Ack:
        payload = parse(OrderRef, data)
        if payload.orderId in conn.orders:
            await self._leave_order(conn, payload.orderId)
        return ok(orderId=payload.orderId)

    async def location_update(self, conn: Conn, data: Any) -> Ack:
        fields = parse_location(data)
        decision = authz.can_send_location(conn.claims)
        if not decision.allowed:
            return err(decision.code, decision.message)
        if not timestamp_plausible(fields["timestamp"], time.time() * 1000, self.location_max_skew):
            return err(ErrorCode.VALIDATION, "timestamp: too far from server time")
        porter_id = conn.claims.user_id
        location = {"porterId": porter_id, **fields}
        order_ids = await self.stores.locations.put(porter_id, location)
        for order_id in order_ids:
            await self.emitter.to_order(order_id, "porter:location", {"orderId": order_id, **location})
        await self.location_sink.on_location_stored(porter_id, location, order_ids)
        return ok(orders=len(order_ids))

    # --- effects shared by subscribe and reconnect --------------------------------------------
    async def _join_order(self, conn: Conn, order_id: str) -> None:
        # Room first (waits for the channel subscription), so the ack means "you will receive".
        await self.sio.enter_room(conn.sid, order_room(order_id), namespace=conn.namespace)
        try:
            await self.stores.subscriptions.add(order_id, conn.sid, conn.reconnect_token)
        except Exception:
            await self.sio.leave_room(conn.sid, order_room(order_id), namespace=conn.namespace)
            raise
        conn.orders.add(order_id)

    async def _leave_order(self, conn: Conn, order_id: str) -> None:
        await self.stores.subscriptions.remove(order_id, conn.sid, conn.reconnect_token)
        await self.sio.leave_room(conn.sid, order_room(order_id), namespace=conn.namespace)
        conn.orders.discard(order_id)

    # --- the end of an order ------------------------------------------------------------------
    async def _after_order_status(self, room: str, data: Any) -> None:
        if isinstance(data, dict) and data.get(FINAL_STATUS_FIELD) is True:
            order_id = order_of_room(room)
            if order_id is not None:
                # A task: the store round trips per member must not hold up the bus reader that
                # delivered the status (its frames are written by now).
                self._endings.spawn(self.end_order(order_id), name=f"end-order-{order_id}")

    async def end_order(self, order_id: str) -> None:
        """The order's final status was delivered here: its sockets on this instance leave the
        room as an unsubscribe would (no more order events, the subscription no longer counts
        against the socket's limit, a reconnect does not restore it)."""
        room = order_room(order_id)
        for ns_rooms in list(self.manager.rooms.values()):
            for sid in list(ns_rooms.get(room) or ()):
                conn = self.conns.get(sid)
                if conn is None or order_id not in conn.orders:
                    continue
                try:
                    await self._leave_order(conn, order_id)
                except Exception:
                    # The room is left even when the store is not reachable (its TTLs clean up).
                    log.warning("ending order %s for socket %s failed", order_id, sid, exc_info=True)
                    await self.sio.leave_room(sid, room, namespace=conn.namespace)
                    conn.orders.discard(order_id)
