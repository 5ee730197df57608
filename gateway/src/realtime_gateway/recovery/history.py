"""Bounded, TTL'd per-order-room history with offsets and an epoch (Centrifugo-style recovery).

Every event emitted to an order room (except transient ones, see ``TRANSIENT_EVENTS``) gets the
next offset of its room and the room's epoch, both added to the event's data. The epoch is a
random token created with the room's history; when the history is lost (TTL, a Redis without the
data), a new epoch starts, so a client holding an old epoch is told ``recovered: false`` instead
of silently missing events.

Redis: one Lua script assigns the offset, appends to a Redis Stream (``MAXLEN`` exact, entry id
``<offset>-0``), and SPUBLISHes the fan-out message on the room's channel. Because assignment and
publication are one atomic step, every instance receives a room's events in offset order, even
when several instances emit to the same room concurrently. The keys' hash tag is the room's
channel name, so on Redis Cluster the script's keys and the channel live in one slot. Appends
waiting at the same moment share one script call (one per slot on Redis Cluster).

Memory (embedded mode): the same semantics in a dict of deques, under the event loop's
single-threadedness.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, Protocol

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from realtime_gateway.fanout.emitter import order_room
from realtime_gateway.state.keys import room_channel
from realtime_gateway.state.multiplex import FastRedis
from realtime_gateway.tasks import Background

HISTORY_SIZE: Final = 500
HISTORY_TTL_S: Final = 24 * 3600
# A room remembers the ids of its last ``size * DEDUP_WINDOW_FACTOR`` offsets (2,000): a redelivery
# comes seconds after the original (an uncommitted Kafka batch, a client's retry), and a bound keeps
# a long-lived room's id hash from growing with every event it ever had.
DEDUP_WINDOW_FACTOR: Final = 4
# Events that are only worth something live: a replayed location is stale, a replayed typing hint
# is wrong. They carry no offset and are not kept.
TRANSIENT_EVENTS: Final = frozenset({"porter:location", "chat:typing"})
CHAT_EVENT: Final = "chat:message"
# Marks a bus message published by the history script (the manager skips only its own prefix).
BUS_PREFIX: Final = b"hist|"

RedisClient = Any


def new_epoch() -> str:
    return secrets.token_hex(6)


@dataclass(frozen=True, slots=True)
class Entry:
    offset: int
    event: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Position:
    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class Appended:
    """What an append did: the event's position, and False when the history already held its
    ``eventId``/``messageId`` (nothing stored or published again)."""

    position: Position
    appended: bool


@dataclass(frozen=True, slots=True)
class Recovery:
    """``recovered``: ``events`` are exactly the ones after the client's offset, none missing."""

    recovered: bool
    position: Position
    events: tuple[Entry, ...] = ()


def decide(client: Position, current: Position, entries: list[Entry]) -> Recovery:
    """The pure recovery rule shared by both stores.

    A client that never saw an event presents offset 0 (its epoch may be empty). Otherwise the
    epochs must match, the client may not be ahead, and the history must still start right after
    the client's offset and reach the current offset without a hole.
    """
    if client.offset < 0:
        return Recovery(False, current)
    if client.offset > 0 and client.epoch != current.epoch:
        return Recovery(False, current)
    if client.offset == 0 and client.epoch not in ("", current.epoch):
        return Recovery(False, current)
    if client.offset > current.offset:
        return Recovery(False, current)
    wanted = [e for e in entries if e.offset > client.offset]
    expected = list(range(client.offset + 1, current.offset + 1))
    if [e.offset for e in wanted] != expected:
        return Recovery(False, current)
    return Recovery(True, current, tuple(wanted))


class HistoryStore(Protocol):
    async def append(
        self, order_id: str, event: str, data: dict[str, Any], *, publish: bytes | None = None
    ) -> tuple[Position, dict[str, Any], bool]:
        """Assign the next offset; return (position, data with offset/epoch, appended).

        ``appended`` is False when ``data`` carries an ``eventId``/``messageId`` already in the
        history (a redelivery): nothing is stored or published again.
        """
        ...

    async def recover(self, order_id: str, client: Position) -> Recovery: ...

    async def chat(self, order_id: str, before: int | None, limit: int) -> list[Entry]:
        """Newest ``limit`` chat messages with offset < ``before``, oldest first."""
        ...


def dedup_id(data: dict[str, Any]) -> str:
    value = data.get("eventId") or data.get("messageId")
    return str(value) if value else ""


# --- Redis ------------------------------------------------------------------------------------

# Appends a batch of events, each to its own room. KEYS: (meta, stream, ids) per event. ARGV[1..4]:
# size, TTL, the epoch for a room whose history starts now, the dedup window in offsets; then one
# argument per event, its fields joined by NUL (JSON and the ids never contain a raw NUL): channel,
# event, data head, separator, dedup id, publish head, publish tail. Returns
# "offset,epoch,appended" per event, joined by ";" (one string: much cheaper to read than a nested
# reply). The ids hash maps each dedup id to its offset and "#<offset>" back to the id (the ids are
# validated to [A-Za-z0-9_.:@-]), so the id of the offset leaving the window is dropped in O(1).
_APPEND: Final = """
local size, ttl, fresh, window = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local out = {}
for i = 0, #KEYS / 3 - 1 do
  local meta, stream, ids = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local f, pos = {}, 1
  local blob = ARGV[5 + i]
  for _ = 1, 7 do
    local stop = string.find(blob, '\\0', pos, true)
    if not stop then
      stop = #blob + 1
    end
    f[#f + 1] = string.sub(blob, pos, stop - 1)
    pos = stop + 1
  end
  local channel, event, head, sep, dedup, msg_head, msg_tail = f[1], f[2], f[3], f[4], f[5], f[6], f[7]
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = fresh
    redis.call('DEL', stream, ids)
    redis.call('HSET', meta, 'epoch', epoch, 'seq', 0)
  end
  local prev = false
  if dedup ~= '' then
    prev = redis.call('HGET', ids, dedup)
  end
  if prev then
    out[#out + 1] = prev .. ',' .. epoch .. ',0'
  else
    local off = redis.call('HINCRBY', meta, 'seq', 1)
    local data = head .. sep .. '"offset":' .. off .. ',"epoch":"' .. epoch .. '"}'
    redis.call('XADD', stream, 'MAXLEN', size, off .. '-0', 'e', event, 'd', data)
    if dedup ~= '' then
      redis.call('HSET', ids, dedup, off, '#' .. off, dedup)
      redis.call('EXPIRE', ids, ttl)
    end
    if off > window then
      local left = '#' .. (off - window)
      local gone = redis.call('HGET', ids, left)
      if gone then
        redis.call('HDEL', ids, gone, left)
      end
    end
    redis.call('EXPIRE', meta, ttl)
    redis.call('EXPIRE', stream, ttl)
    if channel ~= '' then
      redis.call('SPUBLISH', channel, msg_head .. data .. msg_tail)
    end
    out[#out + 1] = off .. ',' .. epoch .. ',1'
  end
end
return table.concat(out, ';')
"""
# Events per script call: one call holds Redis for its whole batch.
APPEND_BATCH: Final = 100

_READ: Final = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq'))
local entries = redis.call('XRANGE', KEYS[2], ARGV[2] .. '-0', '+', 'COUNT', ARGV[3])
return {epoch, seq, entries}
"""


def _tag(order_id: str) -> str:
    # The channel name as hash tag: keys and channel share a Cluster slot.
    return room_channel(order_room(order_id))


def meta_key(order_id: str) -> str:
    return f"rtg:hist:meta:{{{_tag(order_id)}}}"


def stream_key(order_id: str) -> str:
    return f"rtg:hist:{{{_tag(order_id)}}}"


def ids_key(order_id: str) -> str:
    return f"rtg:hist:ids:{{{_tag(order_id)}}}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(raw: list[Any]) -> list[Entry]:
    out = []
    for entry_id, fields in raw:
        if isinstance(fields, dict):
            items = {_text(k): _text(v) for k, v in fields.items()}
        else:
            flat = [_text(x) for x in fields]
            items = dict(zip(flat[::2], flat[1::2], strict=True))
        out.append(Entry(int(_text(entry_id).split("-")[0]), items["e"], orjson.loads(items["d"])))
    return out


@dataclass(slots=True)
class _Pending:
    keys: tuple[str, str, str]
    fields: str
    future: asyncio.Future[Appended]


class RedisHistory:
    """Appends waiting at the same moment (several orders' events of one Kafka batch) go to Redis
    in one script call: one round trip, and a reply to parse, for all of them instead of one per
    event. A caller still awaits its own append, so one order's events stay in sequence. On Redis
    Cluster a script's keys must share a slot, so there the batch is one call per slot, pipelined."""

    def __init__(
        self,
        client: RedisClient,
        *,
        size: int = HISTORY_SIZE,
        ttl: int = HISTORY_TTL_S,
        fast: FastRedis | None = None,
    ) -> None:
        self._r = client
        # The auto-pipelined connection, when the app has one: appends then leave in one write with
        # the tick's other commands, without redis-py's per-call packing and pool work.
        self._fast = fast
        self.size = size
        self.ttl = ttl
        self._cluster = isinstance(client, RedisCluster)
        self._pending: list[_Pending] = []
        self._flushes = Background("history append")

    async def append(
        self, order_id: str, event: str, data: dict[str, Any], *, publish: bytes | None = None
    ) -> tuple[Position, dict[str, Any], bool]:
        """``publish``: the fan-out message with ``data`` cut out, as ``head + b"\\0" + tail``."""
        done = await self.start_append(order_id, event, data, publish)
        position = done.position
        stamped = {**data, "offset": position.offset, "epoch": position.epoch}
        return position, stamped, done.appended

    def start_append(
        self, order_id: str, event: str, data: dict[str, Any], publish: bytes | None
    ) -> asyncio.Future[Appended]:
        """:meth:`append` up to the round trip: appends started in one loop iteration go out in
        one script call, in call order."""
        body = orjson.dumps(data).decode()
        head, sep = body[:-1], ("," if data else "")
        channel, msg_head, msg_tail = "", "", ""
        if publish is not None:
            channel = room_channel(order_room(order_id))
            before, _, after = publish.partition(b"\0")
            msg_head, msg_tail = before.decode(), after.decode()
        loop = asyncio.get_running_loop()
        pending = _Pending(
            (meta_key(order_id), stream_key(order_id), ids_key(order_id)),
            "\0".join((channel, event, head, sep, dedup_id(data), msg_head, msg_tail)),
            loop.create_future(),
        )
        if not self._pending:
            # Runs after every task that is ready in this loop iteration had its turn to add its append.
            loop.call_soon(self._flush)
        self._pending.append(pending)
        return pending.future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        fast = self._fast
        if fast is not None and not self._cluster:
            # Sent from here, and settled by the reply's callback: a task would send it one
            # event-loop pass later, and the multiplexer's own flush another pass after that.
            try:
                sent = fast.send("EVAL", *self._script_args(batch)) if len(batch) <= APPEND_BATCH else None
            except Exception as exc:  # nothing was sent; no caller may wait forever
                _settle(batch, exc)
                return
            if sent is not None:
                fast.write_now()
                sent.add_done_callback(partial(self._settle_sent, batch))
                return
        self._flushes.spawn(self._run(batch))

    def _calls(self, batch: list[_Pending]) -> list[list[_Pending]]:
        if not self._cluster:
            return [batch[i : i + APPEND_BATCH] for i in range(0, len(batch), APPEND_BATCH)]
        by_slot: dict[int, list[_Pending]] = {}
        for pending in batch:
            by_slot.setdefault(key_slot(pending.keys[0].encode()), []).append(pending)
        return [
            group[i : i + APPEND_BATCH]
            for group in by_slot.values()
            for i in range(0, len(group), APPEND_BATCH)
        ]

    def _script_args(self, call: list[_Pending]) -> list[Any]:
        keys = [key for pending in call for key in pending.keys]
        head = [self.size, self.ttl, new_epoch(), self.size * DEDUP_WINDOW_FACTOR]
        return [_APPEND, len(keys), *keys, *head, *(p.fields for p in call)]

    async def _run(self, batch: list[_Pending]) -> None:
        calls = self._calls(batch)
        fast = self._fast
        results: list[Any]
        try:
            if len(calls) == 1:
                args = self._script_args(calls[0])
                results = [await (fast.execute("EVAL", *args) if fast else self._r.eval(*args))]
            elif fast is not None:
                results = await asyncio.gather(
                    *(fast.execute("EVAL", *self._script_args(call)) for call in calls),
                    return_exceptions=True,
                )
            else:
                pipe = self._r.pipeline(transaction=False)
                for call in calls:
                    pipe.eval(*self._script_args(call))
                results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for call, result in zip(calls, results, strict=True):
            _settle(call, result)

    @staticmethod
    def _settle_sent(call: list[_Pending], sent: asyncio.Future[Any]) -> None:
        if sent.cancelled():
            for pending in call:
                pending.future.cancel()
        else:
            _settle(call, sent.exception() or sent.result())

    async def recover(self, order_id: str, client: Position) -> Recovery:
        epoch, seq, raw = await self._r.eval(
            _READ,
            2,
            meta_key(order_id),
            stream_key(order_id),
            new_epoch(),
            max(1, client.offset + 1),
            self.size,
            self.ttl,
        )
        return decide(client, Position(_text(epoch), int(seq)), _entries(raw))

    async def chat(self, order_id: str, before: int | None, limit: int) -> list[Entry]:
        top = "+" if before is None else f"({max(1, before)}-0"
        if before is not None and before <= 1:
            return []
        raw = await self._r.xrevrange(stream_key(order_id), top, "-", count=self.size)
        chats = [e for e in _entries(raw) if e.event == CHAT_EVENT][:limit]
        return chats[::-1]


def _settle(call: list[_Pending], result: Any) -> None:
    """Each append of one script call gets its part of the reply, or the call's error."""
    replies = [] if isinstance(result, BaseException) else _text(result).split(";")
    if not isinstance(result, BaseException) and len(replies) != len(call):
        result = RuntimeError(f"history script answered {len(replies)} of {len(call)} appends")
    for i, pending in enumerate(call):
        if pending.future.done():
            continue  # its caller was cancelled
        if isinstance(result, BaseException):
            pending.future.set_exception(result)
        else:
            off, epoch, appended = replies[i].split(",")
            pending.future.set_result(Appended(Position(epoch, int(off)), appended == "1"))


# --- memory -----------------------------------------------------------------------------------


@dataclass
class _Room:
    epoch: str
    seq: int = 0
    expires_at: float = 0.0
    entries: deque[Entry] = field(default_factory=deque)
    ids: OrderedDict[str, int] = field(default_factory=OrderedDict)


class MemoryHistory:
    def __init__(self, *, size: int = HISTORY_SIZE, ttl: int = HISTORY_TTL_S) -> None:
        self.size = size
        self.ttl = ttl
        self._rooms: dict[str, _Room] = {}

    def _room(self, order_id: str) -> _Room:
        now = time.time()
        room = self._rooms.get(order_id)
        if room is None or room.expires_at < now:
            if len(self._rooms) > 10_000:
                for key in [k for k, r in self._rooms.items() if r.expires_at < now]:
                    del self._rooms[key]
            room = self._rooms[order_id] = _Room(new_epoch(), entries=deque(maxlen=self.size))
        room.expires_at = now + self.ttl
        return room

    async def append(
        self, order_id: str, event: str, data: dict[str, Any], *, publish: bytes | None = None
    ) -> tuple[Position, dict[str, Any], bool]:
        room = self._room(order_id)
        key = dedup_id(data)
        if key and key in room.ids:
            off = room.ids[key]
            return Position(room.epoch, off), {**data, "offset": off, "epoch": room.epoch}, False
        room.seq += 1
        stamped = {**data, "offset": room.seq, "epoch": room.epoch}
        room.entries.append(Entry(room.seq, event, stamped))
        if key:
            room.ids[key] = room.seq
        oldest = room.seq - self.size * DEDUP_WINDOW_FACTOR  # the ids are in offset order
        while room.ids and next(iter(room.ids.values())) <= oldest:
            room.ids.popitem(last=False)
        return Position(room.epoch, room.seq), stamped, True

    async def recover(self, order_id: str, client: Position) -> Recovery:
        room = self._room(order_id)
        return decide(client, Position(room.epoch, room.seq), list(room.entries))

    async def chat(self, order_id: str, before: int | None, limit: int) -> list[Entry]:
        room = self._room(order_id)
        chats = [e for e in room.entries if e.event == CHAT_EVENT and (before is None or e.offset < before)]
        return chats[-limit:] if limit > 0 else []
