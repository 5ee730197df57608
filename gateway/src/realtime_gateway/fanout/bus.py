"""Per-channel sharded pub/sub (SSUBSCRIBE / SPUBLISH) on standalone, Sentinel or Cluster Redis.

One pub/sub connection per Redis node that owns a subscribed channel's slot, each with its own
reader task. ``subscribe`` returns only after Redis confirmed the subscription, so a message
published after a client's ``order:subscribe`` ack can never be missed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from realtime_gateway.state.multiplex import FastRedis, Subscriber

log = logging.getLogger(__name__)

MessageHandler = Callable[[bytes], Coroutine[Any, Any, None]]
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
    """The pub/sub connection to one Redis node and the task reading it (``state/multiplex.py``:
    redis-py's ``PubSub.get_message`` cost more per message than delivering it)."""

    def __init__(self, name: str, client: Any, owner: RedisShardedBus) -> None:
        self.name = name
        self._owner = owner
        self._sub = Subscriber(client.connection_pool, self._message, name=name)

    @property
    def channels(self) -> set[str]:
        return self._sub.channels

    def _message(self, payload: bytes) -> Coroutine[Any, Any, None]:
        # The handler's own coroutine, not one wrapping it: a frame less per message.
        self._owner.received += 1
        return self._owner.dispatch(payload)

    async def subscribe(self, channel: str) -> None:
        await self._sub.subscribe(channel, _CONFIRM_TIMEOUT)

    async def unsubscribe(self, channel: str) -> None:
        self._sub.unsubscribe(channel)

    async def aclose(self) -> None:
        await self._sub.aclose()


class RedisShardedBus:
    def __init__(
        self,
        publisher: Any,
        node_for_channel: Callable[[str], str],
        client_for_node: Callable[[str], Any],
        fast: FastRedis | None = None,
    ) -> None:
        self._publisher = publisher
        # SPUBLISH on the auto-pipelined connection (one write per loop tick for all rooms; on
        # Cluster one per node owning the channel's slot).
        self._fast = fast
        self._node_for_channel = node_for_channel
        self._client_for_node = client_for_node
        self._links: dict[str, _NodeLink] = {}
        self._channel_link: dict[str, _NodeLink] = {}
        self._handler: MessageHandler | None = None
        # Pub/sub messages this instance received (tests assert an idle instance got none).
        self.received = 0

    def set_handler(self, handler: MessageHandler) -> None:
        self._handler = handler

    def dispatch(self, payload: bytes) -> Coroutine[Any, Any, None]:
        if self._handler is None:
            return _ignore(payload)
        return self._handler(payload)

    async def publish(self, channel: str, payload: bytes) -> None:
        if self._fast is not None:
            await self._fast.execute("SPUBLISH", channel, payload)
        else:
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


async def _ignore(payload: bytes) -> None:
    """What a message comes to before a handler is set."""
