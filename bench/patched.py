"""``python -m bench.patched serve``: the gateway with library-level experiments applied.

Used by ``bench/run --ours-patch NAME[,NAME]`` to measure what a proposed optimisation would buy
before anyone changes the gateway: each patch changes a library default at import time, the
gateway's own code is untouched. ``$BENCH_PATCHES`` holds the comma-separated names.

- ``no-deflate``: aiohttp WebSocket responses without permessage-deflate (``compress=False``).
- ``sync-handlers``: python-socketio runs event handlers in the socket's reader task
  (``async_handlers=False``) instead of a new task per event.
- ``emit-no-tasks``: python-socketio's room emit hands the pre-encoded packet to each recipient
  in a loop instead of one task per recipient.
- ``redis-pool``: redis-py connection pools of 2,000 instead of 100 connections.
- ``pubsub-lock``: redis-py ``PubSub.connect`` serialised per pub/sub object.
- ``no-binary-scan``: python-socketio's ``Packet.data_is_binary`` only looks at the top level.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def _no_deflate() -> None:
    from aiohttp import web_ws

    original = web_ws.WebSocketResponse.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["compress"] = False
        original(self, *args, **kwargs)

    web_ws.WebSocketResponse.__init__ = init  # type: ignore[method-assign]


def _sync_handlers() -> None:
    import socketio

    original = socketio.AsyncServer.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["async_handlers"] = False
        original(self, *args, **kwargs)

    socketio.AsyncServer.__init__ = init


def _emit_no_tasks() -> None:
    import socketio
    from engineio import packet as eio_packet
    from socketio import packet

    original = socketio.AsyncManager.emit

    async def emit(
        self: Any,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        room = to or room
        if callback is not None or namespace not in self.rooms:
            await original(
                self, event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs
            )
            return
        args = list(data) if isinstance(data, tuple) else ([data] if data is not None else [])
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        encoded = self.server.packet_class(packet.EVENT, namespace=namespace, data=[event, *args]).encode()
        parts = encoded if isinstance(encoded, list) else [encoded]
        pkts = [eio_packet.Packet(eio_packet.MESSAGE, p) for p in parts]
        for sid, eio_sid in list(self.get_participants(namespace, room)):
            if sid not in skip:
                for p in pkts:
                    await self.server._send_eio_packet(eio_sid, p)

    socketio.AsyncManager.emit = emit


def _redis_pool() -> None:
    from redis.asyncio import connection

    original = connection.ConnectionPool.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        # redis-py 8 caps a pool at 100 and raises when it is exhausted (defect 2 in benchmarks.md).
        kwargs["max_connections"] = max(int(kwargs.get("max_connections") or 0), 2000)
        original(self, *args, **kwargs)

    connection.ConnectionPool.__init__ = init  # type: ignore[method-assign]


def _pubsub_lock() -> None:
    import asyncio
    import weakref

    from redis.asyncio import client

    original: Any = client.PubSub.connect
    locks: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()

    async def connect(self: Any) -> None:
        # Concurrent first calls must not each take a connection (defect 1 in benchmarks.md).
        lock = locks.setdefault(self, asyncio.Lock())
        async with lock:
            await original(self)

    client.PubSub.connect = connect  # type: ignore[method-assign]


def _no_binary_scan() -> None:
    from socketio import packet

    # The gateway never sends bytes: skip the recursive scan of every outgoing payload.
    packet.Packet.data_is_binary = classmethod(lambda cls, data: isinstance(data, bytes | bytearray))


PATCHES = {
    "no-deflate": _no_deflate,
    "sync-handlers": _sync_handlers,
    "emit-no-tasks": _emit_no_tasks,
    "redis-pool": _redis_pool,
    "pubsub-lock": _pubsub_lock,
    "no-binary-scan": _no_binary_scan,
}


def main() -> int:
    names = [n.strip() for n in os.environ.get("BENCH_PATCHES", "").split(",") if n.strip()]
    unknown = [n for n in names if n not in PATCHES]
    if unknown:
        print(f"unknown patch(es) {unknown}; known: {sorted(PATCHES)}", file=sys.stderr)
        return 2
    for name in names:
        PATCHES[name]()
    from realtime_gateway.cli import main as gateway_main

    return gateway_main(["serve"])


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        print("usage: python -m bench.patched serve", file=sys.stderr)
        sys.exit(2)
    sys.exit(main())
