"""Authentication: the JWT attack set with exact connect_error codes, key types, JWKS, credentials order."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from realtime_contract import Env
from tests.integration.gateway.conftest import Deployer
from tests.support.gateway_fixtures import TEST_JWT_SECRET, EmbeddedFactory, mint_token
from tests.support.procs import free_port
from tests.support.sio import ConnectRefused, SioClient

pytestmark = pytest.mark.integration

ISSUER, AUDIENCE = "https://id.example.test/", "realtime"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge_hs256(payload: dict[str, Any], key: bytes, kid: str | None = None) -> str:
    """HS256 by hand: PyJWT refuses to use a PEM public key as an HMAC secret, attackers do not."""
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"} | ({"kid": kid} if kid else {})
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def claims(sub: str = "u1", role: str = "customer", ttl: int = 600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "role": role, "iat": now, "exp": now + ttl, **extra}


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


async def outcome(url: str, namespace: str = "/client", **connect: Any) -> str:
    client = SioClient(url, namespace)
    try:
        await client.connect(**connect)
    except ConnectRefused as refused:
        return str(refused.code)
    session = await client.next("session")
    await client.disconnect()
    return f"ok:{session['userId']}"


async def test_hs256_attack_set(embedded_factory: EmbeddedFactory) -> None:
    gw = await embedded_factory(**{Env.JWT_ISSUER: ISSUER, Env.JWT_AUDIENCE: AUDIENCE})
    good = claims(iss=ISSUER, aud=AUDIENCE)
    cases = {
        "valid": jwt.encode(good, TEST_JWT_SECRET, algorithm="HS256"),
        "alg none": jwt.encode(good, None, algorithm="none"),  # type: ignore[arg-type]
        "alg none, empty signature of a valid token": jwt.encode(good, TEST_JWT_SECRET).rsplit(".", 1)[0]
        + ".",
        "wrong key": jwt.encode(good, "another-secret-another-secret-another-secret!", algorithm="HS256"),
        "expired": jwt.encode(claims(ttl=-120, iss=ISSUER, aud=AUDIENCE), TEST_JWT_SECRET, algorithm="HS256"),
        "expired within leeway": jwt.encode(
            claims(ttl=-5, iss=ISSUER, aud=AUDIENCE), TEST_JWT_SECRET, algorithm="HS256"
        ),
        "wrong issuer": jwt.encode(claims(iss="https://evil/", aud=AUDIENCE), TEST_JWT_SECRET),
        "missing issuer": jwt.encode(claims(aud=AUDIENCE), TEST_JWT_SECRET),
        "wrong audience": jwt.encode(claims(iss=ISSUER, aud="other"), TEST_JWT_SECRET),
        "missing exp": jwt.encode({k: v for k, v in good.items() if k != "exp"}, TEST_JWT_SECRET),
        "unknown role": jwt.encode(claims(role="root", iss=ISSUER, aud=AUDIENCE), TEST_JWT_SECRET),
        "issued in the future": jwt.encode(good | {"iat": int(time.time()) + 3600}, TEST_JWT_SECRET),
        "garbage": "not-a-jwt",
        "garbage with dots": "a.b.c",
        "huge": "x" * 20000,
    }
    results = {name: await outcome(gw.url, token=token) for name, token in cases.items()}
    results["missing"] = await outcome(gw.url)
    results["empty token"] = await outcome(gw.url, auth={"token": ""})
    results["token not a string"] = await outcome(gw.url, auth={"token": 42})
    assert results == {
        "valid": "ok:u1",
        "alg none": "AUTH_INVALID",
        "alg none, empty signature of a valid token": "AUTH_INVALID",
        "wrong key": "AUTH_INVALID",
        "expired": "AUTH_EXPIRED",
        "expired within leeway": "ok:u1",
        "wrong issuer": "AUTH_INVALID",
        "missing issuer": "AUTH_INVALID",
        "wrong audience": "AUTH_INVALID",
        "missing exp": "AUTH_INVALID",
        "unknown role": "AUTH_INVALID",
        "issued in the future": "AUTH_INVALID",
        "garbage": "AUTH_INVALID",
        "garbage with dots": "AUTH_INVALID",
        "huge": "AUTH_INVALID",
        "missing": "AUTH_REQUIRED",
        "empty token": "AUTH_REQUIRED",
        "token not a string": "AUTH_REQUIRED",
    }


async def test_rs256_public_key_and_confusion(embedded_factory: EmbeddedFactory) -> None:
    key, stranger = rsa_key(), rsa_key()
    pem = public_pem(key)
    # Both an HS secret and an RSA key configured: HS tokens may only be checked with the secret.
    gw = await embedded_factory(**{Env.JWT_PUBLIC_KEY: pem})
    rs_only = await embedded_factory(**{Env.JWT_PUBLIC_KEY: pem, Env.JWT_SECRET: None})
    body = claims(sub="rs-user")
    results = {
        "rs256": await outcome(gw.url, token=jwt.encode(body, key, algorithm="RS256")),
        "rs256 other key": await outcome(gw.url, token=jwt.encode(body, stranger, algorithm="RS256")),
        "public key as HS secret": await outcome(gw.url, token=forge_hs256(body, pem.encode())),
        "hs256 secret": await outcome(gw.url, token=mint_token("hs-user", "customer")),
        "rs-only: rs256": await outcome(rs_only.url, token=jwt.encode(body, key, algorithm="RS256")),
        "rs-only: public key as HS secret": await outcome(rs_only.url, token=forge_hs256(body, pem.encode())),
        "rs-only: hs256 with the dev secret": await outcome(rs_only.url, token=mint_token("x", "customer")),
        "rs-only: PS256 with the right key": await outcome(
            rs_only.url, token=jwt.encode(body, key, algorithm="PS256")
        ),
    }
    assert results == {
        "rs256": "ok:rs-user",
        "rs256 other key": "AUTH_INVALID",
        "public key as HS secret": "AUTH_INVALID",
        "hs256 secret": "ok:hs-user",
        "rs-only: rs256": "ok:rs-user",
        "rs-only: public key as HS secret": "AUTH_INVALID",
        "rs-only: hs256 with the dev secret": "AUTH_INVALID",
        "rs-only: PS256 with the right key": "AUTH_INVALID",
    }


async def test_es256_public_key(embedded_factory: EmbeddedFactory) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    gw = await embedded_factory(**{Env.JWT_PUBLIC_KEY: public_pem(key), Env.JWT_SECRET: None})
    other = ec.generate_private_key(ec.SECP256R1())
    assert await outcome(gw.url, token=jwt.encode(claims(sub="es"), key, algorithm="ES256")) == "ok:es"
    assert await outcome(gw.url, token=jwt.encode(claims(), other, algorithm="ES256")) == "AUTH_INVALID"
    assert await outcome(gw.url, token=forge_hs256(claims(), public_pem(key).encode())) == "AUTH_INVALID"


class JwksServer:
    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.requests = 0
        self.port = free_port()

    def publish(self, kid: str, key: rsa.RSAPrivateKey) -> None:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        self.keys = [{**jwk, "kid": kid, "alg": "RS256", "use": "sig"}]

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.json_response({"keys": self.keys})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"


@pytest.fixture
async def jwks() -> AsyncIterator[JwksServer]:
    server = JwksServer()
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", server.port).start()
    yield server
    await runner.cleanup()


async def test_jwks_cached_and_refreshed_on_unknown_kid(deployer: Deployer, jwks: JwksServer) -> None:
    k1, k2 = rsa_key(), rsa_key()
    jwks.publish("k1", k1)
    # A real gateway process on Redis, keys only from the JWKS URL.
    d = await deployer(
        "redis",
        **{Env.JWT_JWKS_URL: jwks.url, Env.JWT_SECRET: "", "RTG_JWT_JWKS_REFRESH_COOLDOWN_SECONDS": "0"},
    )
    url = d.urls[0]

    def token(key: rsa.RSAPrivateKey, kid: str, sub: str) -> str:
        return jwt.encode(claims(sub=sub), key, algorithm="RS256", headers={"kid": kid})

    assert await outcome(url, token=token(k1, "k1", "a")) == "ok:a"
    assert await outcome(url, token=token(k1, "k1", "b")) == "ok:b"
    assert jwks.requests == 1  # cached
    jwks.publish("k2", k2)  # rotation: the gateway has never seen k2
    assert await outcome(url, token=token(k2, "k2", "c")) == "ok:c"
    assert jwks.requests == 2
    assert await outcome(url, token=token(k2, "k1", "d")) == "AUTH_INVALID"  # k1's kid, k2's signature
    assert await outcome(url, token=token(k2, "nope", "e")) == "AUTH_INVALID"
    assert await outcome(url, token=jwt.encode(claims(), k2, algorithm="RS256")) == "AUTH_INVALID"  # no kid
    assert await outcome(url, token=mint_token("f", "customer")) == "AUTH_INVALID"  # no HS secret configured


async def test_credentials_order_and_bearer_header(deployer: Deployer, single_kind: str) -> None:
    d = await deployer(single_kind)
    url = d.urls[0]
    alice, bob = mint_token("alice", "customer"), mint_token("bob", "customer")
    bearer = {"Authorization": f"Bearer {bob}"}
    assert await outcome(url, headers=bearer) == "ok:bob"
    # auth.token wins over the header.
    assert await outcome(url, token=alice, headers=bearer) == "ok:alice"
    assert await outcome(url, headers={"Authorization": "Bearer nonsense"}) == "AUTH_INVALID"
    assert await outcome(url, headers={"Authorization": "Basic YWxpY2U6cHc="}) == "AUTH_REQUIRED"
    # A bad auth.token is refused even when the header would be good: first match wins, no fallback.
    assert await outcome(url, token="garbage", headers=bearer) == "AUTH_INVALID"
