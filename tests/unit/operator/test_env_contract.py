"""Contract: what the operator renders into the pod is accepted by the gateway's own settings parser."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from realtime_contract import Env
from realtime_gateway.settings import Settings, SettingsError, load_settings
from realtime_operator.model import Gateway
from realtime_operator.resources import configmap, deployment
from tests.support.pod_env import resolve_env_entries

from .samples import body

pytestmark = pytest.mark.unit

JWT = "x" * 40


def public_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def pod_environment(
    gw: Gateway, secrets: dict[str, dict[str, str]], pod_name: str = "rtg-abc"
) -> dict[str, str]:
    """What the kubelet would give the container: envFrom the ConfigMap, then env entries."""
    dep = deployment.build(gw)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    cm = configmap.build(gw)
    assert c["envFrom"] == [{"configMapRef": {"name": cm["metadata"]["name"]}}]
    env: dict[str, str] = dict(cm["data"])
    return env | resolve_env_entries(c["env"], lambda name, key: secrets[name][key], pod_name)


def known_variables() -> set[str]:
    return {str(f.validation_alias) for f in Settings.model_fields.values() if f.validation_alias}


CASES: dict[str, tuple[dict[str, Any], dict[str, dict[str, str]]]] = {
    "minimal-hs256": ({}, {"jwt": {"secret": JWT}}),
    "everything": (
        {
            "redis": {"secretRef": {"name": "redis", "key": "url"}, "mode": "cluster"},
            "kafka": {
                "bootstrapServers": "k1:9092,k2:9092",
                "securityProtocol": "SASL_SSL",
                "saslMechanism": "SCRAM-SHA-512",
                "secretRef": {"name": "kafka"},
                "topics": {
                    "orderEvents": "o",
                    "porterEvents": "p",
                    "notificationEvents": "n",
                    "chatEvents": "c",
                },
            },
            "auth": {
                "jwksUrl": "https://id.example/.well-known/jwks.json",
                "issuer": "movenow",
                "audience": "realtime,admin",
                "apiKeySecretRef": {"name": "api"},
            },
            "rateLimits": {"general": {"limit": 10, "windowSeconds": 5}, "chat": {"limit": 3}},
            "connectionLimits": {
                "maxConnectionsPerPod": 8000,
                "connectAttemptsPerIp": 30,
                "connectWindowSeconds": 10,
                "maxPayloadBytes": 32768,
                "maxSubscriptionsPerSocket": 20,
                "handshakeTimeoutSeconds": 5,
                "trustedProxyHeader": "X-Forwarded-For",
                "trustedProxyHops": 2,
                "drainSeconds": 45,
            },
            "tls": {"secretName": "tls"},
            "tracing": {"otlpEndpoint": "http://otel-collector:4318", "sampleRatio": 0.25},
            "transports": ["websocket", "polling"],
            "logLevel": "WARNING",
        },
        {
            "redis": {"url": "rediss://:pw@r1:6379,r2:6379,r3:6379"},
            "kafka": {"username": "gw", "password": "pw"},
            "api": {"api-key": "service-key"},
        },
    ),
    "sentinel-public-key": (
        {
            "redis": {"url": "redis://s1:26379,s2:26379", "mode": "sentinel", "sentinelMaster": "mymaster"},
            "auth": {"publicKeySecretRef": {"name": "pub"}},
            "kafka": None,
        },
        {"pub": {"public.pem": ""}},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_rendered_env_is_accepted_by_the_gateway_settings(case: str) -> None:
    spec, secrets = CASES[case]
    if "pub" in secrets:
        secrets = {"pub": {"public.pem": public_pem()}}
    gw = Gateway.from_body(body(**spec), config_hash="h")
    env = pod_environment(gw, secrets)
    unknown = set(env) - known_variables()
    assert not unknown, f"rendered but unknown to the gateway: {sorted(unknown)}"
    settings = load_settings(env)
    assert not settings.embedded
    assert settings.instance_id == "rtg-abc"
    assert settings.port == 8080
    assert settings.drain_seconds == gw.spec.connection_limits.drain_seconds


def test_every_field_lands_where_the_gateway_reads_it() -> None:
    spec, secrets = CASES["everything"]
    s = load_settings(pod_environment(Gateway.from_body(body(**spec)), secrets))
    assert s.redis_mode == "cluster" and s.redis_url == "rediss://:pw@r1:6379,r2:6379,r3:6379"
    assert s.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert s.kafka_security_protocol == "SASL_SSL" and s.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert s.kafka_sasl_username == "gw"
    assert (s.kafka_topic_order_events, s.kafka_topic_chat_events) == ("o", "c")
    assert s.jwt_jwks_url == "https://id.example/.well-known/jwks.json"
    assert s.jwt_issuer == "movenow" and s.jwt_audience == ("realtime", "admin")
    assert s.api_key is not None and s.api_key.get_secret_value() == "service-key"
    assert s.rate_limit_general == "10/5s" and s.rate_limit_chat == "3/60s"
    assert s.rate_limit_location == "1000/60s"  # not set in the CR: the gateway's default
    assert s.connect_rate_limit == "30/10s"
    assert (s.max_connections, s.max_payload_bytes, s.max_subscriptions) == (8000, 32768, 20)
    assert s.handshake_timeout_seconds == 5 and s.drain_seconds == 45
    assert s.trusted_proxy_header == "X-Forwarded-For" and s.trusted_proxy_hops == 2
    assert s.tls_cert_file is not None and str(s.tls_cert_file).endswith("tls.crt")
    assert s.otlp_endpoint == "http://otel-collector:4318" and s.trace_sample_ratio == 0.25
    assert s.transports == ("websocket", "polling")
    assert s.log_level == "warning"


def test_websocket_only_by_default() -> None:
    _, secrets = CASES["minimal-hs256"]
    s = load_settings(pod_environment(Gateway.from_body(body()), secrets))
    assert s.transports == ("websocket",)


def test_a_short_jwt_secret_is_the_gateways_error_not_a_silent_start() -> None:
    # The operator passes Secrets through; the gateway refuses a weak one with the variable's name.
    with pytest.raises(SettingsError, match=Env.JWT_SECRET):
        load_settings(pod_environment(Gateway.from_body(body()), {"jwt": {"secret": "short"}}))
