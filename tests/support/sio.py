"""A python-socketio client for tests: connect to one namespace, queue every event, call with ack."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import socketio


class ConnectRefused(Exception):
    """The server answered the namespace connect with connect_error ``{"code", "message"}``."""

    def __init__(self, data: Any) -> None:
        self.data = data if isinstance(data, dict) else {"message": data}
        self.code = self.data.get("code")
        super().__init__(f"{self.code}: {self.data.get('message')}")


class SioClient:
    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.namespace = namespace
        self.sio = socketio.AsyncClient(reconnection=False)
        self._queues: defaultdict[str, asyncio.Queue[Any]] = defaultdict(asyncio.Queue)
        self._connect_error: Any = None
        self.sio.on("*", self._on_any, namespace=namespace)
        self.sio.on("connect_error", self._on_connect_error, namespace=namespace)
        self.sio.on("disconnect", self._on_disconnect, namespace=namespace)

    async def _on_any(self, event: str, *args: Any) -> None:
        self._queues[event].put_nowait(args[0] if len(args) == 1 else list(args))

    async def _on_connect_error(self, data: Any = None) -> None:
        self._connect_error = data

    async def _on_disconnect(self, reason: Any = None) -> None:
        self._queues["disconnect"].put_nowait(reason)

    async def connect(
        self,
        *,
        token: str | None = None,
        auth: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        transports: tuple[str, ...] = ("websocket",),
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> SioClient:
        """Connect; raise :class:`ConnectRefused` on connect_error. Returns self."""
        if auth is None and token is not None:
            auth = {"token": token}
        try:
            await self.sio.connect(
                self.url,
                namespaces=[self.namespace],
                transports=list(transports),
                auth=auth,
                headers=headers or {},
                wait_timeout=timeout,
                retry=False,
            )
        except socketio.exceptions.ConnectionError as exc:
            await self.sio.disconnect()
            if self._connect_error is not None:
                raise ConnectRefused(self._connect_error) from None
            raise AssertionError(f"connect to {self.url}{self.namespace} failed: {exc}") from exc
        return self

    @property
    def connected(self) -> bool:
        return bool(self.sio.connected) and self.namespace in self.sio.namespaces

    async def call(self, event: str, data: Any = None, timeout: float = 5.0) -> Any:  # noqa: ASYNC109
        """Emit with an ack and return the ack's payload."""
        return await self.sio.call(event, data, namespace=self.namespace, timeout=timeout)

    async def emit(self, event: str, data: Any = None) -> None:
        await self.sio.emit(event, data, namespace=self.namespace)

    async def next(self, event: str, timeout: float = 5.0) -> Any:  # noqa: ASYNC109
        """The next ``event`` received (oldest first), waiting up to ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(self._queues[event].get(), timeout)
        except TimeoutError:
            raise AssertionError(f"no {event!r} on {self.namespace} within {timeout}s") from None

    def pending(self, event: str) -> list[Any]:
        """Everything of ``event`` received and not yet consumed (drains the queue)."""
        queue = self._queues[event]
        items = []
        while not queue.empty():
            items.append(queue.get_nowait())
        return items

    async def disconnect(self) -> None:
        await self.sio.disconnect()

    async def __aenter__(self) -> SioClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()


async def connect(url: str, namespace: str, token: str | None = None, **kwargs: Any) -> SioClient:
    return await SioClient(url, namespace).connect(token=token, **kwargs)
