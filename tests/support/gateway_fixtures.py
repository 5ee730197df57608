"""pytest fixtures for the gateway (registered in tests/conftest.py).

- ``gateway_factory`` (function): ``start(**env) -> GatewayProcess``; RTG_JWT_SECRET defaults to
  ``TEST_JWT_SECRET``; every started process is stopped at teardown.
- ``embedded_factory`` / ``embedded_gateway`` (function, async): the embedded mode served from the
  test's own event loop, so a test can seed order access in-process
  (``embedded_gateway.gateway.stores.orders``); ``start(RTG_X=None)`` removes a default.
- ``mint_token(sub, role, **claims)``: an HS256 token for ``TEST_JWT_SECRET``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web

from realtime_contract import Env
from tests.support.gateway_proc import GatewayProcess
from tests.support.procs import free_port

TEST_JWT_SECRET = "test-secret-for-the-realtime-gateway-suite-0123456789"


def mint_token(
    sub: str,
    role: str,
    *,
    secret: str = TEST_JWT_SECRET,
    ttl: float = 3600,
    algorithm: str = "HS256",
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "role": role, "iat": now, "exp": now + int(ttl), **claims}
    return jwt.encode(payload, secret, algorithm=algorithm, headers=headers)


GatewayFactory = Callable[..., GatewayProcess]


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[GatewayFactory]:
    started: list[GatewayProcess] = []

    def start(**env: Any) -> GatewayProcess:
        merged = {Env.JWT_SECRET: TEST_JWT_SECRET, **{k: str(v) for k, v in env.items()}}
        name = str(merged.pop("name", f"gateway-{len(started)}"))
        gateway = GatewayProcess(merged, tmp_path / "gateways", name=name)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@dataclass
class EmbeddedGateway:
    url: str
    gateway: Any  # realtime_gateway.app.Gateway
    runner: web.AppRunner
    stopped: bool = False

    async def stop(self) -> None:
        """Idempotent: a test may stop it itself before the fixture's teardown does."""
        if not self.stopped:
            self.stopped = True
            await self.runner.cleanup()


EmbeddedFactory = Callable[..., Awaitable[EmbeddedGateway]]


@pytest.fixture
async def embedded_factory() -> AsyncIterator[EmbeddedFactory]:
    """``await start(**env)``: an embedded-mode gateway in this event loop (env as RTG_* names)."""
    from realtime_gateway.app import build_gateway, create_app
    from realtime_gateway.settings import load_settings

    started: list[EmbeddedGateway] = []

    async def start(**env: Any) -> EmbeddedGateway:
        port = free_port()
        values = {
            Env.HOST: "127.0.0.1",
            Env.PORT: str(port),
            Env.JWT_SECRET: TEST_JWT_SECRET,
            Env.INSTANCE_ID: f"embedded-{len(started)}",
            **{k: str(v) for k, v in env.items() if v is not None},
        }
        for name in [k for k, v in env.items() if v is None]:
            values.pop(name, None)
        gateway = build_gateway(load_settings(values))
        runner = web.AppRunner(create_app(gateway), access_log=None, shutdown_timeout=1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        embedded = EmbeddedGateway(f"http://127.0.0.1:{port}", gateway, runner)
        started.append(embedded)
        return embedded

    yield start
    for embedded in started:
        await embedded.stop()


@pytest.fixture
async def embedded_gateway(embedded_factory: EmbeddedFactory) -> EmbeddedGateway:
    return await embedded_factory()
