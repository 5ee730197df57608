"""Kafka connection settings (bootstrap, TLS, SASL, topics, group) and the aiokafka keyword arguments.

:func:`kafka_config_from_env` is called by the settings module with the environment mapping it
read; it never reads ``os.environ`` itself.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from realtime_contract import DEFAULT_CONSUMER_GROUP, DEFAULT_TOPICS, Env

SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
OFFSET_RESETS: Final = ("latest", "earliest")

TOPIC_ENV: Final[dict[str, str]] = {
    "orderEvents": Env.KAFKA_TOPIC_ORDER_EVENTS,
    "porterEvents": Env.KAFKA_TOPIC_PORTER_EVENTS,
    "notificationEvents": Env.KAFKA_TOPIC_NOTIFICATION_EVENTS,
    "chatEvents": Env.KAFKA_TOPIC_CHAT_EVENTS,
}


class KafkaConfigError(ValueError):
    """A bad Kafka setting; the message starts with the variable's name."""


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    consumer_group: str = DEFAULT_CONSUMER_GROUP
    topics: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TOPICS))
    auto_create_topics: bool = False
    topic_partitions: int = 3
    auto_offset_reset: str = "latest"
    client_id: str = "realtime-gateway"

    def topic(self, topic_key: str) -> str:
        return self.topics[topic_key]

    def ssl_context(self) -> ssl.SSLContext | None:
        if "SSL" not in self.security_protocol:
            return None
        ctx = ssl.create_default_context(cafile=self.ssl_cafile)
        if self.ssl_certfile:
            ctx.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return ctx

    def client_kwargs(self) -> dict[str, Any]:
        """Connection arguments shared by the consumer, the producer and the admin client."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
        }
        ctx = self.ssl_context()
        if ctx is not None:
            kwargs["ssl_context"] = ctx
        if self.security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        return kwargs


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise KafkaConfigError(f"{name}: expected true/false, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str | None) -> str | None:
    raw = env.get(name) or None
    if raw is None:
        return default
    for choice in choices:
        if raw.strip().upper() == choice.upper():
            return choice
    raise KafkaConfigError(f"{name}: expected one of {', '.join(choices)}, got {raw!r}")


def _file(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name) or None
    if raw is not None and not Path(raw).is_file():
        raise KafkaConfigError(f"{name}: no such file {raw!r}")
    return raw


def kafka_config_from_env(
    env: Mapping[str, str], *, client_id: str = "realtime-gateway"
) -> KafkaConfig | None:
    """The Kafka settings, or None when ``RTG_KAFKA_BOOTSTRAP_SERVERS`` is unset (no Kafka)."""
    bootstrap = (env.get(Env.KAFKA_BOOTSTRAP_SERVERS) or "").strip()
    if not bootstrap:
        return None
    for part in bootstrap.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise KafkaConfigError(
                f"{Env.KAFKA_BOOTSTRAP_SERVERS}: expected host:port[,host:port], got {bootstrap!r}"
            )
    protocol = _choice(env, Env.KAFKA_SECURITY_PROTOCOL, SECURITY_PROTOCOLS, "PLAINTEXT")
    mechanism = _choice(env, Env.KAFKA_SASL_MECHANISM, SASL_MECHANISMS, None)
    username = env.get(Env.KAFKA_SASL_USERNAME) or None
    password = env.get(Env.KAFKA_SASL_PASSWORD) or None
    assert protocol is not None
    if protocol.startswith("SASL"):
        if mechanism is None:
            mechanism = "PLAIN"
        if not username or not password:
            raise KafkaConfigError(
                f"{Env.KAFKA_SASL_USERNAME}: {Env.KAFKA_SASL_USERNAME} and {Env.KAFKA_SASL_PASSWORD} "
                f"are required with {Env.KAFKA_SECURITY_PROTOCOL}={protocol}"
            )
    topics = dict(DEFAULT_TOPICS)
    for key, name in TOPIC_ENV.items():
        value = (env.get(name) or "").strip()
        if value:
            topics[key] = value
    partitions_raw = env.get(Env.KAFKA_TOPIC_PARTITIONS) or "3"
    if not partitions_raw.isdigit() or int(partitions_raw) < 1:
        raise KafkaConfigError(
            f"{Env.KAFKA_TOPIC_PARTITIONS}: expected a positive integer, got {partitions_raw!r}"
        )
    reset = _choice(env, Env.KAFKA_AUTO_OFFSET_RESET, OFFSET_RESETS, "latest")
    assert reset is not None
    return KafkaConfig(
        bootstrap_servers=bootstrap,
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username=username,
        sasl_password=password,
        ssl_cafile=_file(env, Env.KAFKA_SSL_CAFILE),
        ssl_certfile=_file(env, Env.KAFKA_SSL_CERTFILE),
        ssl_keyfile=_file(env, Env.KAFKA_SSL_KEYFILE),
        consumer_group=(env.get(Env.KAFKA_CONSUMER_GROUP) or "").strip() or DEFAULT_CONSUMER_GROUP,
        topics=topics,
        auto_create_topics=_bool(env, Env.KAFKA_AUTO_CREATE_TOPICS, False),
        topic_partitions=int(partitions_raw),
        auto_offset_reset=reset.lower(),
        client_id=client_id,
    )
