"""A socket lives no longer than the credential it connected with.

At the token's ``exp`` plus the verifier's leeway (the last moment a connect with that token is
still accepted) the socket receives ``error {"code": "AUTH_EXPIRED", "message", "event": null}``
and is disconnected by the server. The client connects again with a fresh token; its
subscriptions and missed order events come back through the usual connect and recovery path. A
socket that resumed with a reconnect token carries the original token's expiry.

One timer for all sockets, armed for the earliest deadline, instead of one per socket.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from realtime_gateway.auth.errors import ConnectCode
from realtime_gateway.tasks import Background

if TYPE_CHECKING:
    from realtime_gateway.transport.handlers import Conn

log = logging.getLogger(__name__)

# The longest the timer sleeps before looking at the wall clock again (deadlines are wall-clock
# times, the timer runs on the loop's monotonic clock).
MAX_SLEEP_S: Final = 60.0
EXPIRED_EVENT: Final = {
    "code": str(ConnectCode.AUTH_EXPIRED),
    "message": "token expired: connect again with a fresh token",
    "event": None,
}


class SessionExpiry:
    """An observer of the gateway's handlers (``on_connect`` / ``on_disconnect``) that ends each
    socket when its credential expires."""

    def __init__(self, sio: Any, leeway: float, *, clock: Callable[[], float] = time.time) -> None:
        self._sio = sio
        self._leeway = leeway
        self._clock = clock
        # sid -> (deadline, namespace) of the live sockets; the heap may also hold entries of
        # sockets gone since, skipped when they come up (and dropped when they outnumber the live).
        self._due: dict[str, tuple[float, str]] = {}
        self._heap: list[tuple[float, str]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = float("inf")
        self._endings = Background("session expiry")
        self.expired = 0

    # --- observer -----------------------------------------------------------------------------
    def on_connect(self, conn: Conn) -> None:
        deadline = conn.claims.expires_at + self._leeway
        self._due[conn.sid] = (deadline, conn.namespace)
        heapq.heappush(self._heap, (deadline, conn.sid))
        if len(self._heap) > 2 * len(self._due) + 1024:
            self._heap = [(when, sid) for sid, (when, _) in self._due.items()]
            heapq.heapify(self._heap)
        if deadline < self._armed_for:
            self._arm()

    def on_disconnect(self, conn: Conn) -> None:
        self._due.pop(conn.sid, None)

    def on_event(self, conn: Conn | None, event: str, ack: Any, seconds: float) -> None:
        return None

    def on_auth_error(self, namespace: str, code: str) -> None:
        return None

    # --- the timer ----------------------------------------------------------------------------
    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_for = float("inf")
        if not self._heap:
            return
        when = self._heap[0][0]
        delay = min(MAX_SLEEP_S, max(0.0, when - self._clock()))
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)
        self._armed_for = when

    def _fire(self) -> None:
        self._timer = None
        now = self._clock()
        heap, due = self._heap, self._due
        while heap and heap[0][0] <= now:
            when, sid = heapq.heappop(heap)
            entry = due.get(sid)
            if entry is None or entry[0] != when:
                continue  # gone, or connected again since with another deadline
            del due[sid]
            self._endings.spawn(self._end(sid, entry[1]))
        self._arm()

    async def _end(self, sid: str, namespace: str) -> None:
        self.expired += 1
        try:
            await self._sio.emit("error", EXPIRED_EVENT, to=sid, namespace=namespace)
            await self._sio.disconnect(sid, namespace=namespace)
        except Exception:
            log.warning("ending socket %s after its token expired failed", sid, exc_info=True)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_for = float("inf")
        await self._endings.wait()
