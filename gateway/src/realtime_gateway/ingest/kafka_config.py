"""Kafka connection settings (bootstrap, TLS, SASL, topics, group) as aiokafka and librdkafka take them.

Built from the validated :class:`~realtime_gateway.settings.Settings` (which reads the
``RTG_KAFKA_*`` variables); this module reads no environment itself.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from realtime_contract import DEFAULT_CONSUMER_GROUP, DEFAULT_TOPICS, Env
from realtime_gateway.settings import Settings, SettingsError


class KafkaConfigError(SettingsError):
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

    def librdkafka_conf(self, *, logger: logging.Logger) -> dict[str, Any]:
        """The same connection as librdkafka settings, for the group consumer (``reader.py``)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
            "group.id": self.consumer_group,
            "enable.auto.commit": False,
            "auto.offset.reset": self.auto_offset_reset,
            # A fetch request is a few dozen bytes: Nagle would hold the next one for an ACK.
            "socket.nagle.disable": True,
            "logger": logger,
        }
        if "SSL" in self.security_protocol:
            # Without a CA file, the system's trust store (as ``ssl.create_default_context``).
            conf["ssl.ca.location"] = self.ssl_cafile or "probe"
            if self.ssl_certfile:
                conf["ssl.certificate.location"] = self.ssl_certfile
                # As ``load_cert_chain``: without a key file the key is in the certificate file.
                conf["ssl.key.location"] = self.ssl_keyfile or self.ssl_certfile
        if self.security_protocol.startswith("SASL"):
            conf["sasl.mechanism"] = self.sasl_mechanism or "PLAIN"
            conf["sasl.username"] = self.sasl_username
            conf["sasl.password"] = self.sasl_password
        return conf


def kafka_config_from_settings(settings: Settings) -> KafkaConfig | None:
    """The Kafka settings, or None when ``RTG_KAFKA_BOOTSTRAP_SERVERS`` is unset (no Kafka)."""
    bootstrap = (settings.kafka_bootstrap_servers or "").strip()
    if not bootstrap:
        return None
    for part in bootstrap.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise KafkaConfigError(
                f"{Env.KAFKA_BOOTSTRAP_SERVERS}: expected host:port[,host:port], got {bootstrap!r}"
            )
    protocol = settings.kafka_security_protocol
    mechanism = settings.kafka_sasl_mechanism
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
    if protocol.startswith("SASL") and not (settings.kafka_sasl_username and password):
        raise KafkaConfigError(
            f"{Env.KAFKA_SASL_USERNAME}: {Env.KAFKA_SASL_USERNAME} and {Env.KAFKA_SASL_PASSWORD} "
            f"are required with {Env.KAFKA_SECURITY_PROTOCOL}={protocol}"
        )
    topics = {
        "orderEvents": settings.kafka_topic_order_events,
        "porterEvents": settings.kafka_topic_porter_events,
        "notificationEvents": settings.kafka_topic_notification_events,
        "chatEvents": settings.kafka_topic_chat_events,
    }
    return KafkaConfig(
        bootstrap_servers=bootstrap,
        security_protocol=protocol,
        sasl_mechanism=(mechanism or "PLAIN") if protocol.startswith("SASL") else mechanism,
        sasl_username=settings.kafka_sasl_username,
        sasl_password=password,
        ssl_cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
        ssl_certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
        ssl_keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        consumer_group=settings.kafka_consumer_group.strip() or DEFAULT_CONSUMER_GROUP,
        topics=topics,
        auto_create_topics=settings.kafka_auto_create_topics,
        topic_partitions=settings.kafka_topic_partitions,
        auto_offset_reset=settings.kafka_auto_offset_reset,
        client_id=f"realtime-gateway-{settings.instance_id}",
    )
