"""The gateway's settings (RTG_* from realtime_contract.Env) rendered from a spec.

Plain values go into the ConfigMap (envFrom); credentials stay in their Secrets (secretKeyRef).
"""

from __future__ import annotations

from typing import Any

from realtime_contract import DEFAULT_PORT, Env

from .. import naming
from ..model import Gateway


def config_env(gw: Gateway) -> dict[str, str]:
    """Non-secret settings, the ConfigMap's data."""
    spec = gw.spec
    env: dict[str, str] = {
        Env.HOST: "0.0.0.0",
        Env.PORT: str(DEFAULT_PORT),
        Env.LOG_LEVEL: spec.log_level,
        Env.REDIS_MODE: spec.redis.mode,
        Env.TRANSPORTS: ",".join(spec.transports),
        Env.DRAIN_SECONDS: str(spec.connection_limits.drain_seconds),
    }
    if spec.redis.url:
        env[Env.REDIS_URL] = spec.redis.url
    if spec.redis.sentinel_master:
        env[Env.REDIS_SENTINEL_MASTER] = spec.redis.sentinel_master
    if spec.kafka is not None:
        k = spec.kafka
        env |= {
            Env.KAFKA_BOOTSTRAP_SERVERS: k.bootstrap_servers,
            Env.KAFKA_SECURITY_PROTOCOL: k.security_protocol,
            Env.KAFKA_CONSUMER_GROUP: k.consumer_group,
            Env.KAFKA_TOPIC_ORDER_EVENTS: k.topics.order_events,
            Env.KAFKA_TOPIC_PORTER_EVENTS: k.topics.porter_events,
            Env.KAFKA_TOPIC_NOTIFICATION_EVENTS: k.topics.notification_events,
            Env.KAFKA_TOPIC_CHAT_EVENTS: k.topics.chat_events,
        }
        if k.sasl_mechanism:
            env[Env.KAFKA_SASL_MECHANISM] = k.sasl_mechanism
    if spec.auth.jwks_url:
        env[Env.JWT_JWKS_URL] = spec.auth.jwks_url
    if spec.auth.issuer:
        env[Env.JWT_ISSUER] = spec.auth.issuer
    if spec.auth.audience:
        env[Env.JWT_AUDIENCE] = spec.auth.audience
    if spec.connection_limits.max_connections_per_pod is not None:
        env[Env.MAX_CONNECTIONS] = str(spec.connection_limits.max_connections_per_pod)
    if spec.tls is not None:
        env[Env.TLS_CERT_FILE] = f"{naming.TLS_MOUNT}/tls.crt"
        env[Env.TLS_KEY_FILE] = f"{naming.TLS_MOUNT}/tls.key"
    if spec.tracing.otlp_endpoint:
        env[Env.OTLP_ENDPOINT] = spec.tracing.otlp_endpoint
        env[Env.TRACE_SAMPLE_RATIO] = str(spec.tracing.sample_ratio)
    return env


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def secret_env(gw: Gateway) -> list[dict[str, Any]]:
    """Settings that come from Secrets, as container env entries."""
    spec = gw.spec
    out: list[dict[str, Any]] = []
    if spec.redis.secret_ref is not None:
        out.append(_secret_env(Env.REDIS_URL, spec.redis.secret_ref.name, spec.redis.secret_ref.key))
    if spec.kafka is not None and spec.kafka.secret_ref is not None:
        out.append(_secret_env(Env.KAFKA_SASL_USERNAME, spec.kafka.secret_ref.name, "username"))
        out.append(_secret_env(Env.KAFKA_SASL_PASSWORD, spec.kafka.secret_ref.name, "password"))
    auth = spec.auth
    if auth.jwt_secret_ref is not None:
        out.append(_secret_env(Env.JWT_SECRET, auth.jwt_secret_ref.name, auth.jwt_secret_ref.key))
    if auth.public_key_secret_ref is not None:
        ref = auth.public_key_secret_ref
        out.append(_secret_env(Env.JWT_PUBLIC_KEY, ref.name, ref.key))
    if auth.api_key_secret_ref is not None:
        out.append(_secret_env(Env.API_KEY, auth.api_key_secret_ref.name, auth.api_key_secret_ref.key))
    return out
