"""Typed, validated, frozen settings; the only module that reads ``os.environ``.

Every field's alias is the environment variable it comes from, so a validation error can name the
variable. ``load_settings()`` is called once at start; everything else receives the object.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from realtime_contract import DEFAULT_CONSUMER_GROUP, DEFAULT_PORT, DEFAULT_TOPICS, ENV_PREFIX, Env
from realtime_gateway.ratelimit.bucket import parse_rule

# Used only in embedded mode when no key is configured; printed at start so nobody mistakes it
# for a production setting. Long enough for PyJWT's HMAC key-length check.
DEV_JWT_SECRET = "realtime-gateway-embedded-dev-secret-not-for-production"

# Names of settings the shared contract module does not list (gateway-internal tuning).
RECONNECT_TOKEN_TTL_ENV = "RTG_RECONNECT_TOKEN_TTL_SECONDS"
SESSION_TTL_ENV = "RTG_SESSION_TTL_SECONDS"
ORDER_ACCESS_TTL_ENV = "RTG_ORDER_ACCESS_TTL_SECONDS"
LOCATION_MAX_SKEW_ENV = "RTG_LOCATION_MAX_SKEW_SECONDS"
JWT_LEEWAY_ENV = "RTG_JWT_LEEWAY_SECONDS"
JWKS_COOLDOWN_ENV = "RTG_JWT_JWKS_REFRESH_COOLDOWN_SECONDS"
DEV_PAGE_ENV = "RTG_DEV_PAGE"
REDIS_TLS_CA_FILE_ENV = "RTG_REDIS_TLS_CA_FILE"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


RedisMode = Literal["standalone", "sentinel", "cluster"]
Transport = Literal["websocket", "polling"]
LogLevel = Literal["debug", "info", "warning", "error"]


class RedisEndpoint(BaseModel):
    """A parsed ``RTG_REDIS_URL``: one host (standalone) or a comma-separated host list."""

    model_config = ConfigDict(frozen=True)

    tls: bool
    hosts: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    db: int
    # With rediss://: a CA bundle to verify the servers with (default: the system's CA store).
    tls_ca_file: str | None = None

    def url_for(self, host: str, port: int) -> str:
        """A plain redis-py URL for one node, with the same credentials and TLS."""
        scheme = "rediss" if self.tls else "redis"
        auth = ""
        if self.password is not None:
            auth = f"{self.username or ''}:{self.password}@"
        return f"{scheme}://{auth}{host}:{port}/{self.db}"


def parse_redis_url(url: str) -> RedisEndpoint:
    """``redis[s]://[user:pass@]host:port[,host:port…][/db]``; several hosts for sentinel/cluster."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError("scheme must be redis:// or rediss://")
    netloc = parts.netloc
    username: str | None = None
    password: str | None = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        if ":" in userinfo:
            user, pw = userinfo.split(":", 1)
            username, password = (unquote(user) or None), unquote(pw)
        else:
            password = unquote(userinfo)
    hosts: list[tuple[str, int]] = []
    for item in netloc.split(","):
        if not item:
            raise ValueError("empty host in host list")
        host, _, port_text = item.rpartition(":")
        if not host:
            host, port_text = item, "6379"
        host = host.strip("[]")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"bad port in {item!r}")
        hosts.append((host, int(port_text)))
    db_text = parts.path.lstrip("/") or "0"
    if not db_text.isdigit():
        raise ValueError("database must be a number")
    return RedisEndpoint(
        tls=parts.scheme == "rediss",
        hosts=tuple(hosts),
        username=username,
        password=password,
        db=int(db_text),
    )


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


class Settings(BaseModel):
    """All gateway settings. Field aliases are the environment variable names."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    host: str | None = Field(default=None, validation_alias=Env.HOST)
    port: Annotated[int, Field(ge=1, le=65535)] = Field(default=DEFAULT_PORT, validation_alias=Env.PORT)
    log_level: LogLevel = Field(default="info", validation_alias=Env.LOG_LEVEL)
    instance_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}", validation_alias=Env.INSTANCE_ID
    )

    redis_url: str | None = Field(default=None, validation_alias=Env.REDIS_URL)
    redis_mode: RedisMode = Field(default="standalone", validation_alias=Env.REDIS_MODE)
    redis_sentinel_master: str | None = Field(default=None, validation_alias=Env.REDIS_SENTINEL_MASTER)
    redis_tls_ca_file: Path | None = Field(default=None, validation_alias=REDIS_TLS_CA_FILE_ENV)

    kafka_bootstrap_servers: str | None = Field(default=None, validation_alias=Env.KAFKA_BOOTSTRAP_SERVERS)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", validation_alias=Env.KAFKA_SECURITY_PROTOCOL
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, validation_alias=Env.KAFKA_SASL_MECHANISM
    )
    kafka_sasl_username: str | None = Field(default=None, validation_alias=Env.KAFKA_SASL_USERNAME)
    kafka_sasl_password: SecretStr | None = Field(default=None, validation_alias=Env.KAFKA_SASL_PASSWORD)
    kafka_consumer_group: str = Field(
        default=DEFAULT_CONSUMER_GROUP, validation_alias=Env.KAFKA_CONSUMER_GROUP
    )
    kafka_topic_order_events: str = Field(
        default=DEFAULT_TOPICS["orderEvents"], validation_alias=Env.KAFKA_TOPIC_ORDER_EVENTS
    )
    kafka_topic_porter_events: str = Field(
        default=DEFAULT_TOPICS["porterEvents"], validation_alias=Env.KAFKA_TOPIC_PORTER_EVENTS
    )
    kafka_topic_notification_events: str = Field(
        default=DEFAULT_TOPICS["notificationEvents"], validation_alias=Env.KAFKA_TOPIC_NOTIFICATION_EVENTS
    )
    kafka_topic_chat_events: str = Field(
        default=DEFAULT_TOPICS["chatEvents"], validation_alias=Env.KAFKA_TOPIC_CHAT_EVENTS
    )
    # Kafka TLS files, and dev conveniences (topic auto-creation, where a new group starts reading).
    kafka_ssl_cafile: FilePath | None = Field(default=None, validation_alias=Env.KAFKA_SSL_CAFILE)
    kafka_ssl_certfile: FilePath | None = Field(default=None, validation_alias=Env.KAFKA_SSL_CERTFILE)
    kafka_ssl_keyfile: FilePath | None = Field(default=None, validation_alias=Env.KAFKA_SSL_KEYFILE)
    kafka_auto_create_topics: bool = Field(default=False, validation_alias=Env.KAFKA_AUTO_CREATE_TOPICS)
    kafka_topic_partitions: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=3, validation_alias=Env.KAFKA_TOPIC_PARTITIONS
    )
    kafka_auto_offset_reset: Literal["latest", "earliest"] = Field(
        default="latest", validation_alias=Env.KAFKA_AUTO_OFFSET_RESET
    )

    jwt_secret: SecretStr | None = Field(default=None, validation_alias=Env.JWT_SECRET)
    jwt_public_key: str | None = Field(default=None, validation_alias=Env.JWT_PUBLIC_KEY)
    jwt_jwks_url: str | None = Field(default=None, validation_alias=Env.JWT_JWKS_URL)
    jwt_issuer: str | None = Field(default=None, validation_alias=Env.JWT_ISSUER)
    jwt_audience: tuple[str, ...] = Field(default=(), validation_alias=Env.JWT_AUDIENCE)
    jwt_leeway_seconds: Annotated[float, Field(ge=0, le=300)] = Field(
        default=30.0, validation_alias=JWT_LEEWAY_ENV
    )
    # An unknown kid refetches the JWKS at most once per cooldown.
    jwt_jwks_refresh_cooldown_seconds: Annotated[float, Field(ge=0, le=3600)] = Field(
        default=10.0, validation_alias=JWKS_COOLDOWN_ENV
    )
    api_key: SecretStr | None = Field(default=None, validation_alias=Env.API_KEY)

    tls_cert_file: Path | None = Field(default=None, validation_alias=Env.TLS_CERT_FILE)
    tls_key_file: Path | None = Field(default=None, validation_alias=Env.TLS_KEY_FILE)
    transports: tuple[Transport, ...] = Field(
        default=("websocket", "polling"), validation_alias=Env.TRANSPORTS
    )
    # Location frames are ~200 bytes and gain nothing from deflate, while its zlib state costs
    # ~100 KB per socket and ~20 % of the fan-out CPU (docs/benchmarks.md).
    ws_compression: bool = Field(default=False, validation_alias=Env.WS_COMPRESSION)
    # 1 MiB is minutes of location updates for one order; a client further behind is not reading.
    ws_max_pending_bytes: Annotated[int, Field(ge=4096)] = Field(
        default=1 << 20, validation_alias=Env.WS_MAX_PENDING_BYTES
    )
    max_connections: Annotated[int, Field(ge=0)] = Field(default=5000, validation_alias=Env.MAX_CONNECTIONS)
    drain_seconds: Annotated[float, Field(ge=0, le=3600)] = Field(
        default=20.0, validation_alias=Env.DRAIN_SECONDS
    )
    otlp_endpoint: str | None = Field(default=None, validation_alias=Env.OTLP_ENDPOINT)
    trace_sample_ratio: Annotated[float, Field(ge=0, le=1)] = Field(
        default=1.0, validation_alias=Env.TRACE_SAMPLE_RATIO
    )
    # Protection (docs/operations.md): per-user token buckets as POINTS/WINDOW, and DoS limits.
    rate_limit_general: str = Field(default="100/60s", validation_alias=Env.RATE_LIMIT_GENERAL)
    rate_limit_location: str = Field(default="1000/60s", validation_alias=Env.RATE_LIMIT_LOCATION)
    rate_limit_chat: str = Field(default="50/60s", validation_alias=Env.RATE_LIMIT_CHAT)
    # Off unless set: behind an ingress without RTG_TRUSTED_PROXY_HEADER every client shares one IP.
    connect_rate_limit: str | None = Field(default=None, validation_alias=Env.CONNECT_RATE_LIMIT)
    max_payload_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = Field(
        default=64 * 1024, validation_alias=Env.MAX_PAYLOAD_BYTES
    )
    max_subscriptions: Annotated[int, Field(ge=1)] = Field(
        default=100, validation_alias=Env.MAX_SUBSCRIPTIONS
    )
    handshake_timeout_seconds: Annotated[float, Field(ge=0, le=600)] = Field(
        default=10.0, validation_alias=Env.HANDSHAKE_TIMEOUT_SECONDS
    )
    trusted_proxy_header: str | None = Field(default=None, validation_alias=Env.TRUSTED_PROXY_HEADER)
    trusted_proxy_hops: Annotated[int, Field(ge=1, le=10)] = Field(
        default=1, validation_alias=Env.TRUSTED_PROXY_HOPS
    )

    @field_validator("rate_limit_general", "rate_limit_location", "rate_limit_chat", "connect_rate_limit")
    @classmethod
    def _rate_rule(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rule(value)  # the ValueError names the expected POINTS/WINDOW form
        return value

    reconnect_token_ttl_seconds: Annotated[int, Field(ge=10, le=7 * 86400)] = Field(
        default=3600, validation_alias=RECONNECT_TOKEN_TTL_ENV
    )
    session_ttl_seconds: Annotated[int, Field(ge=60, le=30 * 86400)] = Field(
        default=86400, validation_alias=SESSION_TTL_ENV
    )
    order_access_ttl_seconds: Annotated[int, Field(ge=60, le=90 * 86400)] = Field(
        default=7 * 86400, validation_alias=ORDER_ACCESS_TTL_ENV
    )
    location_max_skew_seconds: Annotated[int, Field(ge=1, le=86400)] = Field(
        default=600, validation_alias=LOCATION_MAX_SKEW_ENV
    )
    dev_page: bool | None = Field(default=None, validation_alias=DEV_PAGE_ENV)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.lower()
            return "warning" if value == "warn" else value  # the seed's spelling
        return value

    @field_validator("jwt_audience", "transports", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _csv(value)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_redis_url(value)
        return value

    @field_validator("jwt_public_key")
    @classmethod
    def _pem(cls, value: str | None) -> str | None:
        """Accept PEM text, or a path to a PEM file (how Kubernetes secrets are usually mounted)."""
        if value is None:
            return None
        if "-----BEGIN" in value:
            return value.replace("\\n", "\n")
        path = Path(value)
        if not path.is_file():
            raise ValueError("must be PEM text or the path of a readable PEM file")
        return path.read_text()

    @field_validator("redis_tls_ca_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("must be the path of a readable file")
        return value

    @field_validator("jwt_jwks_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("transports")
    @classmethod
    def _transports(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "websocket" not in value:
            raise ValueError("must include websocket")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.redis_url is not None:
            endpoint = parse_redis_url(self.redis_url)
            if self.redis_mode == "standalone" and len(endpoint.hosts) != 1:
                raise _field_error(Env.REDIS_URL, "standalone mode takes exactly one host")
            if self.redis_mode == "sentinel" and not self.redis_sentinel_master:
                raise _field_error(Env.REDIS_SENTINEL_MASTER, "required when RTG_REDIS_MODE=sentinel")
            if self.jwt_secret is None and self.jwt_public_key is None and self.jwt_jwks_url is None:
                raise _field_error(
                    Env.JWT_SECRET,
                    "set one of RTG_JWT_SECRET, RTG_JWT_PUBLIC_KEY, RTG_JWT_JWKS_URL (required with Redis)",
                )
        if self.jwt_secret is not None and len(self.jwt_secret.get_secret_value().encode()) < 32:
            raise _field_error(Env.JWT_SECRET, "must be at least 32 bytes for HS256")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise _field_error(Env.TLS_CERT_FILE, "RTG_TLS_CERT_FILE and RTG_TLS_KEY_FILE go together")
        if self.kafka_sasl_mechanism is not None and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise _field_error(
                Env.KAFKA_SASL_USERNAME, "username and password required with a SASL mechanism"
            )
        return self

    # --- derived ---------------------------------------------------------------------------
    @property
    def embedded(self) -> bool:
        """No Redis: one process, in-memory state, no Kafka (the README's run command)."""
        return self.redis_url is None

    @property
    def redis_endpoint(self) -> RedisEndpoint | None:
        if not self.redis_url:
            return None
        endpoint = parse_redis_url(self.redis_url)
        if self.redis_tls_ca_file is not None:
            endpoint = endpoint.model_copy(update={"tls_ca_file": str(self.redis_tls_ca_file)})
        return endpoint

    @property
    def uses_dev_secret(self) -> bool:
        return (
            self.embedded
            and self.jwt_secret is None
            and self.jwt_public_key is None
            and not self.jwt_jwks_url
        )

    @property
    def effective_jwt_secret(self) -> str | None:
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        return DEV_JWT_SECRET if self.uses_dev_secret else None

    @property
    def bind_host(self) -> str:
        # Embedded mode accepts tokens signed with a published dev secret: keep it on loopback.
        if self.host:
            return self.host
        return "127.0.0.1" if self.embedded else "0.0.0.0"

    @property
    def serve_dev_page(self) -> bool:
        return self.embedded if self.dev_page is None else self.dev_page


class _FieldError(ValueError):
    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


def _field_error(variable: str, message: str) -> _FieldError:
    return _FieldError(variable, message)


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        loc = error.get("loc") or ()
        variable = str(loc[0]) if loc else ""
        message = str(error.get("msg", "invalid"))
        ctx_error = (error.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _FieldError):
            variable, message = ctx_error.variable, str(ctx_error).split(": ", 1)[1]
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        lines.append(f"{variable}: {message}" if variable else message)
    return "invalid configuration: " + "; ".join(lines)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``environ`` (default: the process environment), once, at start.

    Raises :class:`SettingsError` naming the offending variable. Unknown ``RTG_*`` names are
    ignored so that a newer operator can render variables an older gateway does not know.
    """
    source = os.environ if environ is None else environ
    known = {str(f.validation_alias) for f in Settings.model_fields.values() if f.validation_alias}
    values = {k: v for k, v in source.items() if k.startswith(ENV_PREFIX) and k in known and v != ""}
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
