"""``rediss://``: the gateway talks TLS to Redis, verifying the server with RTG_REDIS_TLS_CA_FILE."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis.asyncio import Redis

from realtime_contract import Env
from realtime_gateway.state.redis_store import RedisOrderAccessStore
from tests.integration.gateway.conftest import uid
from tests.integration.gateway.helpers import location
from tests.support.gateway_fixtures import GatewayFactory, mint_token
from tests.support.procs import free_port
from tests.support.redis_server import RedisServer
from tests.support.sio import SioClient

pytestmark = pytest.mark.integration


def _write_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rtg test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_path, cert_path, key_path


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, int, Path]]:
    """A redis-server with a plain port (for the test's own seeding) and a TLS port (for the gateway)."""
    ca, cert, key = _write_pki(tmp_path)
    tls_port = free_port()
    args = ["--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    args += ["--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
    with RedisServer(tmp_path / "redis", name="redis-tls", extra_args=args) as server:
        yield server, tls_port, ca


async def test_gateways_over_tls_redis(
    gateway_factory: GatewayFactory, tls_redis: tuple[RedisServer, int, Path]
) -> None:
    server, tls_port, ca = tls_redis
    env = {Env.REDIS_URL: f"rediss://127.0.0.1:{tls_port}/0", "RTG_REDIS_TLS_CA_FILE": str(ca)}
    a, b = gateway_factory(**env), gateway_factory(**env)
    plain = Redis.from_url(server.url, decode_responses=True)
    customer, porter = uid("cust"), uid("porter")
    c, p = SioClient(a.url, "/client"), SioClient(b.url, "/porter")
    try:
        orders = RedisOrderAccessStore(plain)
        order_id = uid("order")
        await orders.record_created(order_id, customer)
        await orders.record_assigned(order_id, porter)
        await c.connect(token=mint_token(customer, "customer"))
        assert (await c.call("order:subscribe", {"orderId": order_id}))["ok"] is True
        await p.connect(token=mint_token(porter, "porter"))
        assert (await p.call("location:update", location(lat=6.25)))["ok"] is True
        assert (await c.next("porter:location"))["lat"] == 6.25
        # The gateways' connections really are the TLS ones: the plain port saw only this client.
        clients = await plain.client_list()
        assert sum(1 for cl in clients if cl["laddr"].endswith(f":{tls_port}")) >= 4
    finally:
        await c.disconnect()
        await p.disconnect()
        await plain.aclose()
