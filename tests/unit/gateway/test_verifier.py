"""The verifier on its own: key types decide the algorithms; every failure maps to a contract code."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from realtime_gateway.auth.errors import AuthError
from realtime_gateway.auth.verifier import TokenVerifier, mint_dev_token

pytestmark = pytest.mark.unit

SECRET = "unit-secret-unit-secret-unit-secret-!!"


def body(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "u1", "role": "porter", "iat": now, "exp": now + 60, **extra}


def pem(key: Any) -> str:
    return str(
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


async def code_of(verifier: TokenVerifier, token: str) -> str:
    try:
        claims = await verifier.verify(token)
    except AuthError as exc:
        return str(exc.code)
    return f"ok:{claims.user_id}:{claims.role}"


# The HS512 token below is signed with the HS256 secret on purpose (it must be refused), so PyJWT's
# key-length warning for SHA-512 is expected there.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_hs256_paths() -> None:
    v = TokenVerifier(secret=SECRET, leeway=30)
    assert v.algorithms == frozenset({"HS256"})
    assert await code_of(v, jwt.encode(body(), SECRET)) == "ok:u1:porter"
    assert await code_of(v, mint_dev_token(SECRET, "u2", "admin")) == "ok:u2:admin"
    assert await code_of(v, jwt.encode(body(exp=int(time.time()) - 31), SECRET)) == "AUTH_EXPIRED"
    assert await code_of(v, jwt.encode(body(exp=int(time.time()) - 10), SECRET)) == "ok:u1:porter"
    assert await code_of(v, jwt.encode(body(), SECRET, algorithm="HS512")) == "AUTH_INVALID"
    assert await code_of(v, jwt.encode(body(), None, algorithm="none")) == "AUTH_INVALID"  # type: ignore[arg-type]
    assert await code_of(v, jwt.encode(body(sub=""), SECRET)) == "AUTH_INVALID"
    assert await code_of(v, jwt.encode(body(sub=7), SECRET)) == "AUTH_INVALID"
    assert await code_of(v, jwt.encode(body(role=None), SECRET)) == "AUTH_INVALID"
    assert await code_of(v, "") == "AUTH_INVALID"


async def test_issuer_and_audience() -> None:
    v = TokenVerifier(secret=SECRET, issuer="iss", audience=("a", "b"))
    assert await code_of(v, jwt.encode(body(iss="iss", aud="b"), SECRET)) == "ok:u1:porter"
    assert await code_of(v, jwt.encode(body(iss="iss", aud=["x", "a"]), SECRET)) == "ok:u1:porter"
    assert await code_of(v, jwt.encode(body(iss="iss"), SECRET)) == "AUTH_INVALID"
    assert await code_of(v, jwt.encode(body(aud="a"), SECRET)) == "AUTH_INVALID"
    # Without a configured audience, a token's aud claim is not a reason to refuse.
    plain = TokenVerifier(secret=SECRET)
    assert await code_of(plain, jwt.encode(body(aud="anything"), SECRET)) == "ok:u1:porter"


async def test_key_types_choose_algorithms() -> None:
    r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    e = ec.generate_private_key(ec.SECP256R1())
    rs = TokenVerifier(public_key_pem=pem(r))
    es = TokenVerifier(public_key_pem=pem(e))
    assert rs.algorithms == frozenset({"RS256"}) and es.algorithms == frozenset({"ES256"})
    assert await code_of(rs, jwt.encode(body(), r, algorithm="RS256")) == "ok:u1:porter"
    assert await code_of(es, jwt.encode(body(), e, algorithm="ES256")) == "ok:u1:porter"
    assert await code_of(rs, jwt.encode(body(), e, algorithm="ES256")) == "AUTH_INVALID"
    assert await code_of(es, jwt.encode(body(), r, algorithm="RS256")) == "AUTH_INVALID"


def test_unsupported_keys_are_configuration_errors() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError):
        TokenVerifier(public_key_pem=pem(p384))
    with pytest.raises(ValueError):
        TokenVerifier()


def forge_hs256(payload: dict[str, Any], secret: bytes, header: dict[str, Any] | None = None) -> str:
    """HS256 by hand (PyJWT itself refuses a PEM as an HMAC secret; an attacker does not)."""
    import base64
    import hashlib
    import hmac
    import json

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{head}.{b64(json.dumps(payload).encode())}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


async def test_prepared_secret_keeps_the_confusion_guards() -> None:
    r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = pem(r)
    # A public key configured as the HMAC secret is refused at start, not at the first connect.
    with pytest.raises(ValueError, match="HS256 secret"):
        TokenVerifier(secret=public)
    # Secret and public key side by side: an HS256 token signed with the public key is forged.
    both = TokenVerifier(secret=SECRET, public_key_pem=public)
    assert both.algorithms == frozenset({"HS256", "RS256"})
    assert await code_of(both, forge_hs256(body(), public.encode())) == "AUTH_INVALID"
    assert await code_of(both, jwt.encode(body(), SECRET)) == "ok:u1:porter"
    assert await code_of(both, jwt.encode(body(), r, algorithm="RS256")) == "ok:u1:porter"
    # The prepared secret verifies what the plain one does, many times over.
    for i in range(50):
        assert await code_of(both, jwt.encode(body(sub=f"u{i}"), SECRET)) == f"ok:u{i}:porter"
    # The module-level PyJWT is untouched: it still checks whatever key it is given.
    with pytest.raises(jwt.InvalidKeyError):
        jwt.decode(forge_hs256(body(), public.encode()), public, algorithms=["HS256"])


async def test_malformed_headers() -> None:
    v = TokenVerifier(secret=SECRET)
    good = jwt.encode(body(), SECRET)
    head, rest = good.split(".", 1)
    for token in ("abc", "a.b.c", "!!!.e30.x", f"{head}x.{rest}", "W10.e30.x", "x" * 3000 + ".e30.x"):
        assert await code_of(v, token) == "AUTH_INVALID", token
    # alg none, in any spelling the header may carry, never gets past the allow-list.
    for alg in ("none", "None", "NONE", ""):
        assert await code_of(v, forge_hs256(body(), SECRET.encode(), {"alg": alg})) == "AUTH_INVALID"
    # A header with padding characters is what some issuers send: still verified, not refused.
    padded = f"{head}{'=' * (-len(head) % 4)}.{rest}"
    assert await code_of(v, padded) == "ok:u1:porter"


def test_segment_checks_match_pyjwt() -> None:
    """The regex-based segment decoder accepts and refuses exactly what PyJWT's own does."""
    import random

    from jwt import PyJWS
    from jwt.exceptions import DecodeError

    from realtime_gateway.auth.verifier import SegmentCheckingJWS

    def outcome(fn: Any, segment: bytes) -> bytes | str:
        try:
            return bytes(fn(segment, "payload"))
        except DecodeError as exc:
            return f"error: {exc}"

    rng = random.Random(8)
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    odd = b"=+/!. \n\x00\xff"
    segments = [b"", b"=", b"==", b"===", b"A", b"AA", b"AA=", b"AA==", b"AAA=", b"AB==", b"QQ", b"QR"]
    for _ in range(4000):
        n = rng.randrange(0, 24)
        chars = alphabet if rng.random() < 0.7 else alphabet + odd
        segments.append(bytes(rng.choice(chars) for _ in range(n)) + b"=" * rng.choice((0, 0, 1, 2, 3)))
    for raw in (b"", b"x", b"hello world", bytes(range(40))):  # canonical encodings, padded and not
        encoded = base64_urlsafe(raw)
        segments += [encoded, encoded.rstrip(b"=")]
    accepted = 0
    for segment in segments:
        ours = outcome(SegmentCheckingJWS._decode_base64url_segment, segment)
        assert ours == outcome(PyJWS._decode_base64url_segment, segment), segment
        accepted += isinstance(ours, bytes)
    assert accepted > 500  # the comparison covered both outcomes


def base64_urlsafe(raw: bytes) -> bytes:
    import base64

    return base64.urlsafe_b64encode(raw)
