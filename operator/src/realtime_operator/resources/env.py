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
    env |= _limits_env(gw)
    if spec.tls is not None:
        env[Env.TLS_CERT_FILE] = f"{naming.TLS_MOUNT}/tls.crt"
        env[Env.TLS_KEY_FILE] = f"{naming.TLS_MOUNT}/tls.key"
    if spec.tracing.otlp_endpoint:
        env[Env.OTLP_ENDPOINT] = spec.tracing.otlp_endpoint
        env[Env.TRACE_SAMPLE_RATIO] = str(spec.tracing.sample_ratio)
    return env


def _limits_env(gw: Gateway) -> dict[str, str]:
    """Rate and connection limits; unset fields keep the gateway's own defaults."""
    env: dict[str, str] = {}
    rl = gw.spec.rate_limits
    for name, bucket in ((Env.RATE_LIMIT_GENERAL, rl.general), (Env.RATE_LIMIT_LOCATION, rl.location),
                         (Env.RATE_LIMIT_CHAT, rl.chat)):  # fmt: skip
        if bucket.limit is not None:
            env[name] = f"{bucket.limit}/{bucket.window_seconds}s"  # the gateway's POINTS/WINDOW form
    cl = gw.spec.connection_limits
    if cl.connect_attempts_per_ip is not None:
        env[Env.CONNECT_RATE_LIMIT] = f"{cl.connect_attempts_per_ip}/{cl.connect_window_seconds}s"
    optional = {
        Env.MAX_CONNECTIONS: cl.max_connections_per_pod,
        Env.MAX_PAYLOAD_BYTES: cl.max_payload_bytes,
        Env.MAX_SUBSCRIPTIONS: cl.max_subscriptions_per_socket,
        Env.HANDSHAKE_TIMEOUT_SECONDS: cl.handshake_timeout_seconds,
        Env.TRUSTED_PROXY_HEADER: cl.trusted_proxy_header,
        Env.TRUSTED_PROXY_HOPS: cl.trusted_proxy_hops,
    }
    env |= {k: str(v) for k, v in optional.items() if v is not None}
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
