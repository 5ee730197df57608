"""The README's run command: `realtime-gateway serve` with no settings, and `realtime-gateway token`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from realtime_contract import Env
from tests.support.gateway_proc import GatewayProcess, http_json
from tests.support.sio import SioClient

pytestmark = pytest.mark.integration


@pytest.fixture
def bare_gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    """No Redis, no key: the embedded mode with its dev secret, as `scripts/run` starts it."""
    gateway = GatewayProcess({}, tmp_path, name="embedded-cli")
    yield gateway
    gateway.stop()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "realtime_gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        check=False,
    )


async def test_serve_embedded_and_connect_with_a_cli_token(bare_gateway: GatewayProcess) -> None:
    assert http_json(bare_gateway.url + "/healthz") == (200, {"ok": True})
    status, ready = bare_gateway.readyz()
    assert status == 200 and ready["mode"] == "embedded"
    banner = bare_gateway.proc.log_path.read_text()
    assert f"listening on {bare_gateway.url}/" in banner
    assert "realtime-gateway token --sub u1 --role customer" in banner
    status, page = http_json(bare_gateway.url + "/")
    assert status == 200 and "socket.io" in page

    issued = cli("token", "--sub", "u1", "--role", "porter", "--ttl", "120")
    assert issued.returncode == 0, issued.stderr
    client = SioClient(bare_gateway.url, "/porter")
    await client.connect(token=issued.stdout.strip())
    try:
        session = await client.next("session")
        assert (session["userId"], session["role"]) == ("u1", "porter")
        assert 0 < session["reconnectTokenExpiresIn"] <= 120
    finally:
        await client.disconnect()


async def test_polling_transport_is_accepted(bare_gateway: GatewayProcess) -> None:
    token = cli("token", "--sub", "u2", "--role", "customer").stdout.strip()
    client = SioClient(bare_gateway.url, "/client")
    await client.connect(token=token, transports=("polling",))
    try:
        assert (await client.next("session"))["userId"] == "u2"
        ack = await client.call("order:subscribe", {"orderId": "nope"})
        assert ack["error"]["code"] == "NOT_FOUND"
    finally:
        # python-engineio's server answers a pending long-poll only at the next ping after a
        # client CLOSE; abort instead of waiting ~25 s for it (browsers abort their XHR too).
        await client.sio.eio.disconnect(abort=True)


def test_bad_settings_exit_with_the_variable_named() -> None:
    result = cli("serve", env={Env.PORT: "eighty"})
    assert result.returncode == 2
    assert "RTG_PORT" in result.stderr
    result = cli("token", "--sub", "u1", "--role", "customer", env={Env.REDIS_URL: "redis://127.0.0.1:1"})
    assert result.returncode == 2 and "RTG_JWT_SECRET" in result.stderr
