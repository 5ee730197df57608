"""Settings: every RTG_* variable parsed, validated, and errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from realtime_contract import Env
from realtime_gateway.settings import DEV_JWT_SECRET, SettingsError, load_settings, parse_redis_url

pytestmark = pytest.mark.unit

SECRET = "s" * 32


def test_defaults_are_the_embedded_mode() -> None:
    s = load_settings({})
    assert s.embedded and s.uses_dev_secret
    assert s.effective_jwt_secret == DEV_JWT_SECRET
    assert s.bind_host == "127.0.0.1"  # the dev secret is public: loopback only
    assert s.port == 8080 and s.transports == ("websocket", "polling")
    assert s.serve_dev_page


def test_redis_mode_needs_a_key_and_binds_everywhere() -> None:
    s = load_settings({Env.REDIS_URL: "redis://r:6379/0", Env.JWT_SECRET: SECRET})
    assert not s.embedded and not s.uses_dev_secret
    assert s.bind_host == "0.0.0.0" and not s.serve_dev_page
    assert s.effective_jwt_secret == SECRET


def test_lists_and_case() -> None:
    s = load_settings(
        {
            Env.JWT_AUDIENCE: "a, b",
            Env.TRANSPORTS: "websocket",
            Env.LOG_LEVEL: "DEBUG",
            Env.JWT_SECRET: SECRET,
        }
    )
    assert s.jwt_audience == ("a", "b") and s.transports == ("websocket",) and s.log_level == "debug"


def test_settings_are_frozen() -> None:
    s = load_settings({})
    with pytest.raises(ValueError):
        s.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({Env.PORT: "abc"}, Env.PORT),
        ({Env.PORT: "70000"}, Env.PORT),
        ({Env.LOG_LEVEL: "loud"}, Env.LOG_LEVEL),
        ({Env.REDIS_URL: "http://x"}, Env.REDIS_URL),
        ({Env.REDIS_URL: "redis://h:notaport"}, Env.REDIS_URL),
        ({Env.REDIS_URL: "redis://h:1"}, Env.JWT_SECRET),  # no key with Redis
        ({Env.REDIS_URL: "redis://a:1,b:2", Env.JWT_SECRET: SECRET}, Env.REDIS_URL),  # standalone: one host
        (
            {Env.REDIS_URL: "redis://a:1", Env.REDIS_MODE: "sentinel", Env.JWT_SECRET: SECRET},
            Env.REDIS_SENTINEL_MASTER,
        ),
        ({Env.REDIS_MODE: "ring"}, Env.REDIS_MODE),
        ({Env.JWT_SECRET: "short"}, Env.JWT_SECRET),
        ({Env.JWT_PUBLIC_KEY: "/nonexistent.pem"}, Env.JWT_PUBLIC_KEY),
        ({Env.JWT_JWKS_URL: "file:///etc/passwd"}, Env.JWT_JWKS_URL),
        ({Env.TRANSPORTS: "polling"}, Env.TRANSPORTS),
        ({Env.TRANSPORTS: "websocket,carrier-pigeon"}, Env.TRANSPORTS),
        ({Env.TLS_CERT_FILE: "/c.pem"}, Env.TLS_CERT_FILE),
        ({Env.TRACE_SAMPLE_RATIO: "2"}, Env.TRACE_SAMPLE_RATIO),
        ({Env.MAX_CONNECTIONS: "-1"}, Env.MAX_CONNECTIONS),
        ({Env.KAFKA_SASL_MECHANISM: "PLAIN"}, Env.KAFKA_SASL_USERNAME),
        ({Env.KAFKA_SECURITY_PROTOCOL: "SMOKE"}, Env.KAFKA_SECURITY_PROTOCOL),
        ({"RTG_RECONNECT_TOKEN_TTL_SECONDS": "1"}, "RTG_RECONNECT_TOKEN_TTL_SECONDS"),
        ({"RTG_REDIS_TLS_CA_FILE": "/nonexistent/ca.pem"}, "RTG_REDIS_TLS_CA_FILE"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(env)
    assert str(exc.value).startswith("invalid configuration: ")
    assert f"{variable}:" in str(exc.value)


def test_empty_and_unknown_variables_are_ignored() -> None:
    s = load_settings({Env.PORT: "", "RTG_FROM_THE_FUTURE": "1", "HOME": "/root"})
    assert s.port == 8080


def test_public_key_from_text_or_file(tmp_path: pytest.TempPathFactory) -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\n"
    assert load_settings({Env.JWT_PUBLIC_KEY: pem.replace("\n", "\\n")}).jwt_public_key == pem
    path = tmp_path / "key.pem"  # type: ignore[operator]
    path.write_text(pem)
    assert load_settings({Env.JWT_PUBLIC_KEY: str(path)}).jwt_public_key == pem


def test_redis_urls() -> None:
    one = parse_redis_url("rediss://user:p%40ss@cache.example:6380/2")
    assert one.tls and one.hosts == (("cache.example", 6380),) and one.db == 2
    assert (one.username, one.password) == ("user", "p@ss")
    assert one.url_for("n1", 7000) == "rediss://user:p@ss@n1:7000/2"
    many = parse_redis_url("redis://:secret@s1:26379,s2:26379,s3")
    assert many.hosts == (("s1", 26379), ("s2", 26379), ("s3", 6379)) and many.password == "secret"
    s = load_settings(
        {
            Env.REDIS_URL: "redis://s1:26379,s2:26379",
            Env.REDIS_MODE: "sentinel",
            Env.REDIS_SENTINEL_MASTER: "mymaster",
            Env.JWT_SECRET: SECRET,
        }
    )
    assert s.redis_endpoint is not None and len(s.redis_endpoint.hosts) == 2
    assert s.redis_endpoint.tls_ca_file is None


def test_redis_tls_ca_file_reaches_the_endpoint(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    s = load_settings(
        {Env.REDIS_URL: "rediss://r:6380", Env.JWT_SECRET: SECRET, "RTG_REDIS_TLS_CA_FILE": str(ca)}
    )
    assert s.redis_endpoint is not None and s.redis_endpoint.tls and s.redis_endpoint.tls_ca_file == str(ca)
