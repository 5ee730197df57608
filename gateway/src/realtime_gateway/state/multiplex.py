"""Lean Redis connections for the location path: an auto-pipelined command connection and a
sharded pub/sub subscriber.

redis-py's asyncio client costs 100-200 µs of CPU per command around the round trip (pool
checkout, retry and deprecation wrappers, a reply parser that awaits per element), which made a
``location:update`` in Redis mode three times as expensive as in embedded mode. Here:

- :class:`Multiplexer` keeps one connection and writes every command at once; all commands issued
  in one event-loop tick (from any number of sockets) leave in one ``write`` and their replies
  are matched in order from whole socket reads. Redis answers a connection's commands in order,
  so this is pipelining without a pipeline object, and a failed command only fails its caller.
- :class:`Subscriber` reads a sharded pub/sub connection with the same parser and hands each
  message's payload to a callback; it re-subscribes its channels after a reconnect.

Both open their connection through a redis-py connection pool's ``make_connection()``, so TLS,
credentials, ``SELECT`` and the Sentinel master lookup are redis-py's, and then own its transport.
Replies are parsed in the transport's ``data_received`` (``_Replies``), not by a reader task: a
task would see them one event-loop pass later, and under load a pass is long. A pub/sub message's
handler starts there too; if it waits, later messages queue behind it in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from functools import partial
from typing import Any, Final, Protocol

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from realtime_gateway.state.resp import Push, RespParser, pack_command
from realtime_gateway.tasks import Suspended, start_inline, stop_tasks

log = logging.getLogger(__name__)

# No reply at all for this long while commands wait: the connection is dropped and they fail.
STALL_TIMEOUT_S: Final = 5.0
# After a failed connect, calls fail at once for this long instead of each trying again.
CONNECT_BACKOFF_S: Final = 0.2
# A read sent ahead is handed out only this soon after it was sent (else read again).
READ_AHEAD_TTL_S: Final = 0.5
READ_AHEAD_MAX: Final = 10_000


class _Replies(asyncio.Protocol):
    """A connection's protocol once it is ours: each read is parsed and its complete replies go
    to ``on_replies`` at once. ``closed`` gets the error the connection ended with."""

    def __init__(
        self,
        writer: asyncio.StreamWriter,
        on_replies: Callable[[list[Any]], None],
        on_lost: Callable[[_Replies, RedisError], None] | None = None,
    ) -> None:
        self.transport = writer.transport
        # Kept referenced: Python closes a StreamWriter's transport when the writer is collected.
        self._writer = writer
        self._on_replies = on_replies
        self._on_lost = on_lost
        self._parser = RespParser()
        self.closed: asyncio.Future[RedisError] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        try:
            parser.feed(data)
            self._on_replies(parser.replies())
        except Exception as exc:  # a protocol error, or a reply that ends the connection
            self._lose(exc if isinstance(exc, RedisError) else RedisConnectionError(repr(exc)))
            self.close()

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(
            RedisConnectionError(
                f"connection to redis lost: {exc!r}" if exc else "connection closed by redis"
            )
        )

    def _lose(self, error: RedisError) -> None:
        if self.closed.done():
            return
        self.closed.set_result(error)
        if self._on_lost is not None:
            self._on_lost(self, error)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.transport.close()


async def _open(
    pool: Any,
    on_replies: Callable[[list[Any]], None],
    on_lost: Callable[[_Replies, RedisError], None] | None = None,
) -> _Replies:
    """A new connection from ``pool``'s settings, handshake done, its transport handed to a
    ``_Replies`` protocol."""
    conn = pool.make_connection()
    try:
        await conn.connect()
    except RedisError:
        raise
    except OSError as exc:
        raise RedisConnectionError(str(exc)) from exc
    reader, writer = conn._reader, conn._writer
    if reader is None or writer is None:
        raise RedisConnectionError("connection closed during the handshake")
    # The connection object is dropped: from here on the transport is ours alone.
    conn._reader = conn._writer = None
    transport = writer.transport
    if transport.is_closing() or reader.at_eof():
        transport.close()
        raise RedisConnectionError("connection closed during the handshake")
    protocol = _Replies(writer, on_replies, on_lost)
    buffered = bytes(getattr(reader, "_buffer", b""))  # read by the stream, not yet taken
    transport.set_protocol(protocol)
    if buffered:
        protocol.data_received(buffered)
    return protocol


class Multiplexer:
    """Commands on one connection, auto-pipelined per event-loop tick."""

    def __init__(self, pool: Any, name: str = "redis", *, stall_timeout_s: float = STALL_TIMEOUT_S) -> None:
        self._pool = pool
        self.name = name
        self._stall_s = stall_timeout_s
        self._conn: _Replies | None = None
        self._pending: deque[asyncio.Future[Any]] = deque()
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._watch_handle: asyncio.TimerHandle | None = None
        self._last_reply = 0.0
        self._lock = asyncio.Lock()
        self._down_until = 0.0
        self._down_error: RedisError | None = None
        self._closed = False
        # Told the first word of each command sent (metrics); None: not counted.
        self.on_command: Callable[[str], None] | None = None
        self.connects = 0
        self.writes = 0  # socket writes: fewer than commands when a tick coalesced several
        self._ahead: dict[tuple[Any, ...], tuple[float, asyncio.Future[Any]]] = {}

    # --- calls -------------------------------------------------------------------------------
    async def execute(self, *args: Any) -> Any:
        """One command; raises the redis-py exception of an error reply."""
        if self._conn is None:
            await self._connect()
        fut = self._queue(args)
        reply = await fut
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def execute_many(self, commands: Iterable[tuple[Any, ...]]) -> list[Any]:
        """Consecutive commands; error replies are returned in place (as exception instances)."""
        if self._conn is None:
            await self._connect()
        futures = []
        for args in commands:
            futures.append(self._queue(args))
        try:
            return [await fut for fut in futures]
        except BaseException:
            for fut in futures:  # a dropped connection failed them all: retrieve the others too
                if fut.done() and not fut.cancelled():
                    fut.exception()
            raise

    def send(self, *args: Any) -> asyncio.Future[Any] | None:
        """Queue a command without waiting for it; the future gets the reply (an error reply as
        an exception instance). None when not connected (the caller takes its slower path)."""
        if self._conn is None:
            return None
        fut = self._queue(args)
        fut.add_done_callback(_retrieve)
        return fut

    def read_ahead(self, *args: Any) -> None:
        """Send a read now for a caller that will ``take`` the same command a moment later, so
        the read shares a round trip with what the current caller waits for."""
        fut = self.send(*args)
        if fut is None:
            return
        now = time.monotonic()
        if len(self._ahead) >= READ_AHEAD_MAX:
            self._ahead = {k: v for k, v in self._ahead.items() if now - v[0] < READ_AHEAD_TTL_S}
        self._ahead[args] = (now, fut)

    def take(self, *args: Any) -> asyncio.Future[Any] | None:
        """The reply future of a fresh ``read_ahead`` of exactly this command, or None."""
        entry = self._ahead.pop(args, None)
        if entry is None or time.monotonic() - entry[0] > READ_AHEAD_TTL_S:
            return None
        return entry[1]

    def _queue(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Pack the command for the next write and count it; the future gets its reply."""
        packed = pack_command(*args)
        if self.on_command is not None:
            self.on_command(str(args[0]).lower())
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            self._last_reply = loop.time()  # the stall clock starts with the first waiting call
        self._pending.append(fut)
        self._out.append(packed)
        if self._flush_handle is None:
            self._flush_handle = loop.call_soon(self._flush)
        if self._watch_handle is None:
            self._watch_handle = loop.call_later(self._stall_s / 2, self._watch)
        return fut

    def write_now(self) -> None:
        """Write the commands queued so far at once rather than at the end of this loop pass:
        for a caller that is itself the end of a pass's batching (the history's script call)."""
        handle = self._flush_handle
        if handle is not None:
            handle.cancel()
            self._flush()

    def _flush(self) -> None:
        self._flush_handle = None
        out, self._out = self._out, []
        conn = self._conn
        if conn is None or not out:
            return  # the connection died meanwhile: _drop already failed these callers
        try:
            conn.transport.write(out[0] if len(out) == 1 else b"".join(out))
            self.writes += 1
        except Exception as exc:
            self._drop(RedisConnectionError(f"write to redis failed: {exc!r}"))

    def _watch(self) -> None:
        """A Redis that accepts commands but answers nothing must not hold callers forever."""
        self._watch_handle = None
        if not self._pending:
            return
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_reply >= self._stall_s:
            self._drop(RedisTimeoutError(f"no reply from redis ({self.name}) for {self._stall_s}s"))
            return
        self._watch_handle = loop.call_later(self._stall_s / 2, self._watch)

    # --- the connection ----------------------------------------------------------------------
    async def _connect(self) -> None:
        if self._closed:
            raise RedisConnectionError("connection closed")
        if time.monotonic() < self._down_until and self._down_error is not None:
            raise self._down_error
        async with self._lock:
            if self._conn is not None:
                return
            try:
                conn = await _open(self._pool, self._on_replies, self._on_lost)
            except RedisError as exc:
                self._down_until = time.monotonic() + CONNECT_BACKOFF_S
                self._down_error = RedisConnectionError(f"cannot connect to redis ({self.name}): {exc}")
                raise self._down_error from exc
            self._conn = conn
            self.connects += 1

    def _on_replies(self, replies: list[Any]) -> None:
        pending = self._pending
        self._last_reply = asyncio.get_running_loop().time()
        for reply in replies:
            if isinstance(reply, Push) or not pending:
                continue
            fut = pending.popleft()
            if not fut.done():  # a caller that gave up (cancelled) is skipped
                fut.set_result(reply)
            if isinstance(reply, ReadOnlyError):
                # The node was demoted (Sentinel failover): reconnect to the new master.
                raise RedisConnectionError("redis node is read-only now")

    def _on_lost(self, conn: _Replies, error: RedisError) -> None:
        if conn is self._conn:
            self._drop(error)

    def _drop(self, error: RedisError) -> None:
        """Close the connection and fail every caller still waiting for a reply."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self._out.clear()
        self._ahead.clear()
        pending, self._pending = self._pending, deque()
        for fut in pending:
            if not fut.done():
                fut.set_exception(error)
        if not self._closed:
            log.warning("redis connection %s dropped: %r", self.name, error)

    async def aclose(self) -> None:
        self._closed = True
        self._drop(RedisConnectionError("connection closed"))
        for handle in (self._flush_handle, self._watch_handle):
            if handle is not None:
                handle.cancel()


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a fire-and-forget command's failure as seen (no "exception never retrieved")."""
    if not fut.cancelled() and fut.exception() is not None:
        log.debug("redis command without a waiting caller failed: %r", fut.exception())


MessageCallback = Callable[[bytes], Coroutine[Any, Any, None]]


class Subscriber:
    """One sharded pub/sub connection (SSUBSCRIBE); reconnects and re-subscribes.

    A message's handler starts as the message is read (``start_inline``). One that waits (a gap
    in an order's offsets filled from the history) goes on in a task, and the messages read
    meanwhile queue behind it, so each is handled after the one before it, as Redis sent them."""

    def __init__(self, pool: Any, on_message: MessageCallback, name: str = "redis") -> None:
        self._pool = pool
        self._on_message = on_message
        self.name = name
        self.channels: set[str] = set()
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._conn: _Replies | None = None
        self._task: asyncio.Task[None] | None = None
        # Messages read while a handler waits, and the task handling them; None: no handler waits.
        self._backlog: deque[bytes] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self.received = 0
        self.connects = 0

    async def subscribe(self, channel: str, wait_s: float) -> None:
        """Returns once Redis confirmed the subscription; raises TimeoutError otherwise."""
        key = channel.encode()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(fut)
        self.channels.add(channel)
        try:
            if self._task is None:
                self._task = asyncio.create_task(self._run(), name=f"fanout-connection-{self.name}")
            elif self._conn is not None:
                self._conn.transport.write(pack_command("SSUBSCRIBE", channel))
            # (not connected yet: the connection subscribes every wanted channel once it is up)
            await asyncio.wait_for(fut, wait_s)
        except BaseException:
            if not self._waiters.get(key) or self._waiters[key] == [fut]:
                self.channels.discard(channel)
            raise
        finally:
            waiters = self._waiters.get(key)
            if waiters and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._waiters[key]

    def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        if self._conn is not None:
            self._conn.transport.write(pack_command("SUNSUBSCRIBE", channel))

    async def _run(self) -> None:
        """Keeps the connection: opens it, subscribes, and opens it again when it ends."""
        backoff = 0.05
        while True:
            conn: _Replies | None = None
            try:
                conn = await _open(self._pool, self._on_replies)
                self.connects += 1
                # One command per channel: on Redis Cluster a multi-channel SSUBSCRIBE must stay
                # within one slot.
                conn.transport.write(b"".join(pack_command("SSUBSCRIBE", c) for c in sorted(self.channels)))
                self._conn = conn
                backoff = 0.05
                raise await conn.closed
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("fan-out connection for %s: %r; retrying in %.2fs", self.name, exc, backoff)
            finally:
                if self._conn is conn:
                    self._conn = None
                if conn is not None:
                    conn.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    def _on_replies(self, replies: list[Any]) -> None:
        for reply in replies:
            if isinstance(reply, list) and len(reply) >= 3:
                kind = reply[0]
                if kind == b"smessage":
                    self.received += 1
                    self._handle(reply[2])
                elif kind == b"ssubscribe":
                    for fut in self._waiters.get(reply[1], ()):
                        if not fut.done():
                            fut.set_result(None)
            elif isinstance(reply, ResponseError):
                log.warning("fan-out subscriber %s: %s", self.name, reply)

    def _handle(self, payload: bytes) -> None:
        backlog = self._backlog
        if backlog is not None:
            backlog.append(payload)
            return
        try:
            rest = start_inline(self._on_message(payload))
        except Exception:
            log.exception("fan-out delivery failed")
            return
        if rest is not None:
            self._backlog = deque()
            self._drainer = asyncio.get_running_loop().create_task(
                self._drain(rest, self._backlog), name=f"fanout-backlog-{self.name}"
            )

    async def _drain(self, rest: Suspended, backlog: deque[bytes]) -> None:
        """The rest of the handler that waited, then the messages queued behind it."""
        try:
            try:
                await rest
            except Exception:
                log.exception("fan-out delivery failed")
            while backlog:
                try:
                    await self._on_message(backlog.popleft())
                except Exception:
                    log.exception("fan-out delivery failed")
        finally:
            self._backlog = None

    async def aclose(self) -> None:
        await stop_tasks(self._task, self._drainer)
        self._task = self._drainer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class FastRedis(Protocol):
    """What the location path uses: :class:`Multiplexer` (one node) or :class:`ClusterMultiplexer`."""

    # Told the first word of each command sent (metrics); None: not counted.
    on_command: Callable[[str], None] | None

    async def execute(self, *args: Any) -> Any: ...
    async def execute_many(self, commands: Iterable[tuple[Any, ...]]) -> list[Any]: ...
    def send(self, *args: Any) -> asyncio.Future[Any] | None: ...
    def read_ahead(self, *args: Any) -> None: ...
    def take(self, *args: Any) -> asyncio.Future[Any] | None: ...
    def write_now(self) -> None: ...
    async def aclose(self) -> None: ...


_REDIRECTS: Final = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")


def _redirected(reply: Any) -> bool:
    return isinstance(reply, ResponseError) and str(reply).startswith(_REDIRECTS)


def _key_of(args: tuple[Any, ...]) -> Any:
    """The key a location-path command routes by (``EVAL``/``EVALSHA``: the first key)."""
    return args[3] if str(args[0]).upper() in ("EVAL", "EVALSHA") else args[1]


class ClusterMultiplexer:
    """A :class:`Multiplexer` per cluster node, each command sent to the node owning its key's
    slot (redis-py's slot map). A redirect (``MOVED``/``ASK``: a slot moved) or ``TRYAGAIN`` /
    ``CLUSTERDOWN`` is retried once through redis-py's cluster client, which follows it and
    refreshes the slot map the next commands are routed by; for ``send`` too, whose future then
    gets the retried command's reply. (``take`` hands over the raw reply: its caller, the location
    store, retries a failed read-ahead itself.)"""

    def __init__(self, cluster: Any, client_for_node: Callable[[str], Any]) -> None:
        self._cluster = cluster
        self._client_for_node = client_for_node
        self._nodes: dict[str, Multiplexer] = {}
        # Commands ``send`` got a redirect for, retried in order by one task at a time.
        self._redirects: deque[tuple[tuple[Any, ...], asyncio.Future[Any]]] = deque()
        self._follower: asyncio.Task[None] | None = None
        self.on_command: Callable[[str], None] | None = None

    def _mux(self, key: Any) -> Multiplexer | None:
        """None when redis-py cannot place the key (slot map not loaded yet, slot uncovered)."""
        try:
            node = self._cluster.get_node_from_key(key)
        except Exception:
            return None
        name = f"{node.host}:{node.port}"
        mux = self._nodes.get(name)
        if mux is None:
            mux = self._nodes[name] = Multiplexer(self._client_for_node(name).connection_pool, name=name)
            mux.on_command = self._count
        return mux

    def _count(self, word: str) -> None:
        if self.on_command is not None:
            self.on_command(word)

    async def _slow(self, args: tuple[Any, ...]) -> Any:
        return await self._cluster.execute_command(*args)

    async def execute(self, *args: Any) -> Any:
        mux = self._mux(_key_of(args))
        if mux is not None:
            try:
                return await mux.execute(*args)
            except ResponseError as exc:
                if not _redirected(exc):
                    raise
        return await self._slow(args)

    async def execute_many(self, commands: Iterable[tuple[Any, ...]]) -> list[Any]:
        """All ``commands`` share one hash tag (one node), as the location store's do."""
        commands = list(commands)
        mux = self._mux(_key_of(commands[0]))
        replies: list[Any]
        if mux is None:
            replies, retry = [None] * len(commands), list(range(len(commands)))
        else:
            replies = await mux.execute_many(commands)
            retry = [i for i, reply in enumerate(replies) if _redirected(reply)]
        for i in retry:
            try:
                replies[i] = await self._slow(commands[i])
            except ResponseError as exc:
                replies[i] = exc
        return replies

    def send(self, *args: Any) -> asyncio.Future[Any] | None:
        mux = self._mux(_key_of(args))
        sent = None if mux is None else mux.send(*args)
        if sent is None:
            return None
        # A redirect is followed as in ``execute``: the returned future gets the final reply.
        followed: asyncio.Future[Any] = sent.get_loop().create_future()
        followed.add_done_callback(_retrieve)
        sent.add_done_callback(partial(self._settle, args, followed))
        return followed

    def _settle(
        self, args: tuple[Any, ...], followed: asyncio.Future[Any], sent: asyncio.Future[Any]
    ) -> None:
        if followed.done():  # the caller gave up on it
            return
        if sent.cancelled():
            followed.cancel()
        elif (exc := sent.exception()) is not None:
            followed.set_exception(exc)
        elif _redirected(reply := sent.result()):
            self._redirects.append((args, followed))
            if self._follower is None or self._follower.done():
                follow = self._follow_redirects()
                self._follower = sent.get_loop().create_task(follow, name="cluster-redirects")
        else:
            followed.set_result(reply)

    async def _follow_redirects(self) -> None:
        """One redirected command after another: redis-py's cluster client refuses, rather than
        queues, a command beyond its connection limit, and a slot move redirects many at once."""
        queue = self._redirects
        while queue:
            args, followed = queue.popleft()
            if followed.done():
                continue
            try:
                reply = await self._slow(args)
            except ResponseError as exc:
                reply = exc  # an error reply, in place, as ``send`` gives it
            except asyncio.CancelledError:
                followed.cancel()
                while queue:
                    queue.popleft()[1].cancel()
                raise
            except Exception as exc:
                if not followed.done():
                    followed.set_exception(exc)
                continue
            if not followed.done():
                followed.set_result(reply)

    def read_ahead(self, *args: Any) -> None:
        mux = self._mux(_key_of(args))
        if mux is not None:
            mux.read_ahead(*args)

    def take(self, *args: Any) -> asyncio.Future[Any] | None:
        mux = self._mux(_key_of(args))
        return None if mux is None else mux.take(*args)

    def write_now(self) -> None:
        for mux in self._nodes.values():
            mux.write_now()

    async def aclose(self) -> None:
        await stop_tasks(self._follower)
        for mux in self._nodes.values():
            await mux.aclose()
        self._nodes.clear()
