from __future__ import annotations

import logging
from pathlib import Path

import pytest

from realtime_contract import DEFAULT_CONSUMER_GROUP, Env
from realtime_gateway.ingest.kafka_config import KafkaConfig, KafkaConfigError, kafka_config_from_settings
from realtime_gateway.ingest.producer import record_headers
from realtime_gateway.settings import SettingsError, load_settings
from tests.support.certs import CertificateAuthority, write_pem

pytestmark = pytest.mark.unit


def config(env: dict[str, str]) -> KafkaConfig | None:
    return kafka_config_from_settings(load_settings(env))


def test_no_bootstrap_means_no_kafka() -> None:
    assert config({}) is None


def test_defaults_follow_the_contract() -> None:
    cfg = config({Env.KAFKA_BOOTSTRAP_SERVERS: "127.0.0.1:9092", Env.INSTANCE_ID: "gw-1"})
    assert cfg is not None
    assert cfg.consumer_group == DEFAULT_CONSUMER_GROUP
    assert cfg.topic("chatEvents") == "chat-events"
    assert (cfg.auto_create_topics, cfg.auto_offset_reset) == (False, "latest")
    assert cfg.client_kwargs() == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
        "client_id": "realtime-gateway-gw-1",
    }


def test_topics_group_and_dev_options_are_configurable() -> None:
    cfg = config(
        {
            Env.KAFKA_BOOTSTRAP_SERVERS: "a:1,b:2",
            Env.KAFKA_TOPIC_ORDER_EVENTS: "t-orders",
            Env.KAFKA_CONSUMER_GROUP: "g2",
            Env.KAFKA_AUTO_CREATE_TOPICS: "true",
            Env.KAFKA_TOPIC_PARTITIONS: "6",
            Env.KAFKA_AUTO_OFFSET_RESET: "earliest",
        }
    )
    assert cfg is not None
    assert (cfg.topic("orderEvents"), cfg.topic("porterEvents")) == ("t-orders", "porter-events")
    assert (cfg.consumer_group, cfg.auto_create_topics, cfg.topic_partitions) == ("g2", True, 6)
    assert cfg.auto_offset_reset == "earliest"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_mechanisms(mechanism: str) -> None:
    cfg = config(
        {
            Env.KAFKA_BOOTSTRAP_SERVERS: "k:9093",
            Env.KAFKA_SECURITY_PROTOCOL: "SASL_PLAINTEXT",
            Env.KAFKA_SASL_MECHANISM: mechanism,
            Env.KAFKA_SASL_USERNAME: "u",
            Env.KAFKA_SASL_PASSWORD: "secret",
        }
    )
    assert cfg is not None
    kwargs = cfg.client_kwargs()
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT"
    assert kwargs["sasl_mechanism"] == mechanism
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("u", "secret")
    assert "secret" not in repr(cfg)


def test_tls_builds_an_ssl_context_trusting_the_configured_ca(tmp_path: Path) -> None:
    ca = write_pem(tmp_path / "ca.pem", CertificateAuthority("test-ca").cert_pem)
    cfg = config(
        {
            Env.KAFKA_BOOTSTRAP_SERVERS: "k:9093",
            Env.KAFKA_SECURITY_PROTOCOL: "SSL",
            Env.KAFKA_SSL_CAFILE: str(ca),
        }
    )
    assert cfg is not None
    ctx = cfg.client_kwargs()["ssl_context"]
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "test-ca"),),)]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({Env.KAFKA_SECURITY_PROTOCOL: "TLS"}, Env.KAFKA_SECURITY_PROTOCOL),
        ({Env.KAFKA_SASL_MECHANISM: "GSSAPI"}, Env.KAFKA_SASL_MECHANISM),
        ({Env.KAFKA_TOPIC_PARTITIONS: "0"}, Env.KAFKA_TOPIC_PARTITIONS),
        ({Env.KAFKA_AUTO_CREATE_TOPICS: "maybe"}, Env.KAFKA_AUTO_CREATE_TOPICS),
        ({Env.KAFKA_SSL_CAFILE: "/nonexistent/ca.pem"}, Env.KAFKA_SSL_CAFILE),
        ({Env.KAFKA_AUTO_OFFSET_RESET: "none"}, Env.KAFKA_AUTO_OFFSET_RESET),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings({Env.KAFKA_BOOTSTRAP_SERVERS: "k:9092", **env})


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({Env.KAFKA_BOOTSTRAP_SERVERS: "nohostport"}, Env.KAFKA_BOOTSTRAP_SERVERS),
        ({Env.KAFKA_SECURITY_PROTOCOL: "SASL_SSL"}, Env.KAFKA_SASL_USERNAME),
    ],
)
def test_inconsistent_kafka_settings_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(KafkaConfigError, match=f"^{named}"):
        config({Env.KAFKA_BOOTSTRAP_SERVERS: "k:9092", **env})


def test_headers_carry_correlation_and_a_w3c_traceparent() -> None:
    headers = dict(record_headers("corr-1"))
    assert headers["correlation-id"] == b"corr-1"
    version, trace_id, span_id, flags = headers["traceparent"].decode().split("-")
    assert (version, len(trace_id), len(span_id), flags) == ("00", 32, 16, "01")


def test_librdkafka_settings_carry_the_same_connection(tmp_path: Path) -> None:
    ca = write_pem(tmp_path / "ca.pem", CertificateAuthority("test-ca").cert_pem)
    cfg = config(
        {
            Env.KAFKA_BOOTSTRAP_SERVERS: "k:9093",
            Env.KAFKA_SECURITY_PROTOCOL: "SASL_SSL",
            Env.KAFKA_SASL_MECHANISM: "SCRAM-SHA-512",
            Env.KAFKA_SASL_USERNAME: "u",
            Env.KAFKA_SASL_PASSWORD: "secret",
            Env.KAFKA_SSL_CAFILE: str(ca),
            Env.KAFKA_SSL_CERTFILE: str(ca),
            Env.KAFKA_CONSUMER_GROUP: "grp",
            Env.KAFKA_AUTO_OFFSET_RESET: "earliest",
        }
    )
    assert cfg is not None
    logger = logging.getLogger("test")
    conf = cfg.librdkafka_conf(logger=logger)
    assert conf == {
        "bootstrap.servers": "k:9093",
        "security.protocol": "SASL_SSL",
        "client.id": cfg.client_id,
        "group.id": "grp",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "socket.nagle.disable": True,
        "logger": logger,
        "ssl.ca.location": str(ca),
        "ssl.certificate.location": str(ca),
        # No key file: the key is read from the certificate file, as load_cert_chain does.
        "ssl.key.location": str(ca),
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u",
        "sasl.password": "secret",
    }
    plain = config({Env.KAFKA_BOOTSTRAP_SERVERS: "k:9092"})
    assert plain is not None
    assert not any(key.startswith(("ssl.", "sasl.")) for key in plain.librdkafka_conf(logger=logger))
