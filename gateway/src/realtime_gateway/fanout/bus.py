"""Per-channel sharded pub/sub (SSUBSCRIBE / SPUBLISH) on standalone, Sentinel or Cluster Redis.

One pub/sub connection per Redis node that owns a subscribed channel's slot, each with its own
reader task. ``subscribe`` returns only after Redis confirmed the subscription, so a message
published after a client's ``order:subscribe`` ack can never be missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

MessageHandler = Callable[[bytes], Awaitable[None]]
_CONFIRM_TIMEOUT = 5.0


class Bus(Protocol):
    received: int

    def set_handler(self, handler: MessageHandler) -> None: ...
    async def publish(self, channel: str, payload: bytes) -> None: ...
    async def subscribe(self, channel: str) -> None: ...
    async def unsubscribe(self, channel: str) -> None: ...
    def channels(self) -> list[str]: ...
    async def aclose(self) -> None: ...


class _NodeLink:
    """The pub/sub connection to one Redis node and the task reading it."""

    def __init__(self, name: str, client: Any, owner: RedisShardedBus) -> None:
        self.name = name
        self._pubsub = client.pubsub()
        self._owner = owner
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._connect_lock = asyncio.Lock()
        self.channels: set[str] = set()

    async def _connected(self) -> None:
        """Open the pub/sub connection once. redis-py's ``PubSub.connect`` checks for a connection
        and then awaits the pool, so concurrent first calls would each take one and the last
        would win: the others' SSUBSCRIBEs go out on orphaned connections and are never confirmed."""
        if self._task is not None:
            return
        async with self._connect_lock:
            if self._task is None:
                await self._pubsub.connect()
                self._task = asyncio.create_task(self._read(), name=f"fanout-reader-{self.name}")

    async def subscribe(self, channel: str) -> None:
        key = channel.encode()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(fut)
        try:
            await self._connected()
            await self._pubsub.ssubscribe(channel)
            self.channels.add(channel)
            await asyncio.wait_for(fut, _CONFIRM_TIMEOUT)
        finally:
            waiters = self._waiters.get(key)
            if waiters and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._waiters[key]

    async def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        await self._pubsub.sunsubscribe(channel)

    async def _read(self) -> None:
        backoff = 0.05
        while True:
            try:
                message = await self._pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection dropped: redis-py reconnects and resubscribes
                log.warning("fan-out reader for %s: %r; retrying in %.2fs", self.name, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            if message is None:
                continue
            kind = message["type"]
            if kind == "smessage":
                self._owner.received += 1
                try:
                    await self._owner.dispatch(message["data"])
                except Exception:
                    log.exception("fan-out delivery failed")
            elif kind == "ssubscribe":
                for fut in self._waiters.get(message["channel"], ()):
                    if not fut.done():
                        fut.set_result(None)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._pubsub.aclose()


class RedisShardedBus:
    def __init__(
        self,
        publisher: Any,
        node_for_channel: Callable[[str], str],
        client_for_node: Callable[[str], Any],
    ) -> None:
        self._publisher = publisher
        self._node_for_channel = node_for_channel
        self._client_for_node = client_for_node
        self._links: dict[str, _NodeLink] = {}
        self._channel_link: dict[str, _NodeLink] = {}
        self._handler: MessageHandler | None = None
        # Pub/sub messages this instance received (tests assert an idle instance got none).
        self.received = 0

    def set_handler(self, handler: MessageHandler) -> None:
        self._handler = handler

    async def dispatch(self, payload: bytes) -> None:
        if self._handler is not None:
            await self._handler(payload)

    async def publish(self, channel: str, payload: bytes) -> None:
        await self._publisher.spublish(channel, payload)

    async def subscribe(self, channel: str) -> None:
        if channel in self._channel_link:
            return
        name = self._node_for_channel(channel)
        link = self._links.get(name)
        if link is None:
            link = self._links[name] = _NodeLink(name, self._client_for_node(name), self)
        await link.subscribe(channel)
        self._channel_link[channel] = link

    async def unsubscribe(self, channel: str) -> None:
        link = self._channel_link.pop(channel, None)
        if link is not None:
            await link.unsubscribe(channel)

    def channels(self) -> list[str]:
        return sorted(self._channel_link)

    async def aclose(self) -> None:
        for link in self._links.values():
            await link.aclose()
        self._links.clear()
        self._channel_link.clear()
