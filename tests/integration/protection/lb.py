"""A tiny TCP load balancer for tests: new connections go to the first backend whose /readyz
answers 200, as a Kubernetes Service does with its ready endpoints. Established connections are
piped untouched (WebSocket included)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import aiohttp

from realtime_gateway.tasks import stop_tasks
from tests.support.procs import free_port


class ReadinessBalancer:
    def __init__(self, backends: Sequence[tuple[str, int]], probe_interval: float = 0.1) -> None:
        self.backends = list(backends)
        self.ready = [False] * len(self.backends)
        self.routed = [0] * len(self.backends)
        self.port = free_port()
        self._interval = probe_interval
        self._server: asyncio.Server | None = None
        self._probe: asyncio.Task[None] | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> ReadinessBalancer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self._probe = asyncio.create_task(self._probe_loop())
        return self

    async def _probe_loop(self) -> None:
        timeout = aiohttp.ClientTimeout(total=0.5)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                for i, (host, port) in enumerate(self.backends):
                    try:
                        async with http.get(f"http://{host}:{port}/readyz") as resp:
                            self.ready[i] = resp.status == 200
                    except (aiohttp.ClientError, TimeoutError):
                        self.ready[i] = False
                await asyncio.sleep(self._interval)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = next((i for i, ok in enumerate(self.ready) if ok), None)
        if target is None:
            writer.close()
            return
        host, port = self.backends[target]
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        self.routed[target] += 1
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()

    async def stop(self) -> None:
        await stop_tasks(self._probe)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await stop_tasks(*self._pipes)
