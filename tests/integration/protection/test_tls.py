"""WSS served directly by the gateway from RTG_TLS_CERT_FILE / RTG_TLS_KEY_FILE (TLS 1.2+, 1.3 preferred)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import socketio

from realtime_contract import Env
from tests.integration.protection.conftest import uid
from tests.support.certs import write_server_tls
from tests.support.gateway_fixtures import TEST_JWT_SECRET, mint_token
from tests.support.procs import ManagedProcess, free_port, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def tls_gateway(tmp_path: Path, redis_url: str) -> Iterator[tuple[str, ssl.SSLContext]]:
    tls = write_server_tls(tmp_path)
    port = free_port()
    env = {
        Env.HOST: "127.0.0.1",
        Env.PORT: str(port),
        Env.REDIS_URL: redis_url,
        Env.JWT_SECRET: TEST_JWT_SECRET,
        Env.TLS_CERT_FILE: str(tls.cert_file),
        Env.TLS_KEY_FILE: str(tls.key_file),
        Env.INSTANCE_ID: "gw-tls",
    }
    proc = ManagedProcess("gw-tls", [sys.executable, "-m", "realtime_gateway", "serve"], tmp_path, env=env)
    trust = ssl.create_default_context(cafile=str(tls.ca_file))
    url = f"https://127.0.0.1:{port}"

    def ready() -> bool:
        with urllib.request.urlopen(url + "/readyz", context=trust, timeout=2) as resp:
            return bool(resp.status == 200)

    try:
        wait_until(ready, timeout=30, what="TLS gateway /readyz", proc=proc)
        yield url, trust
    finally:
        assert proc.stop() == 0, proc.tail()


def negotiated(port: int, ctx: ssl.SSLContext) -> str | None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.version()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_wss_direct(tls_gateway: tuple[str, ssl.SSLContext]) -> None:
    url, trust = tls_gateway
    port = int(url.rsplit(":", 1)[1])
    assert negotiated(port, trust) == "TLSv1.3"
    tls12 = ssl.create_default_context(
        cadata=ssl.DER_cert_to_PEM_cert(trust.get_ca_certs(binary_form=True)[0])
    )
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert negotiated(port, tls12) == "TLSv1.2"
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        negotiated(port, old)
    # Plain HTTP on the TLS port gets nothing useful.
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            await http.get(url.replace("https", "http") + "/readyz", timeout=aiohttp.ClientTimeout(total=5))

    client = socketio.AsyncClient(reconnection=False, websocket_extra_options={"ssl": trust})
    sessions: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    client.on("session", sessions.put_nowait, namespace="/client")
    user = uid("c")
    await client.connect(
        url,
        namespaces=["/client"],
        transports=["websocket"],
        auth={"token": mint_token(user, "customer")},
        wait_timeout=10,
    )
    try:
        assert client.transport() == "websocket"
        ack = await client.call("order:unsubscribe", {"orderId": "x"}, namespace="/client", timeout=5)
        assert ack["ok"] is True
        session = await asyncio.wait_for(sessions.get(), 5)
        assert session["userId"] == user
    finally:
        await client.disconnect()
