"""What the gateway and the operator share: env var names, ports, paths, metric names, labels.

Neither deployable imports the other's internals; both read this module.
"""

from __future__ import annotations

from typing import Final

# --- HTTP surface of a gateway pod -----------------------------------------------------------
DEFAULT_PORT: Final = 8080
PORT_NAME: Final = "http"
HEALTHZ_PATH: Final = "/healthz"
READYZ_PATH: Final = "/readyz"
METRICS_PATH: Final = "/metrics"
SOCKETIO_PATH: Final = "/socket.io/"
EVENTS_API_PATH: Final = "/api/events"

# --- Socket.IO namespaces and the role each one admits --------------------------------------
NAMESPACE_ROLES: Final[dict[str, str]] = {"/client": "customer", "/porter": "porter", "/admin": "admin"}

# --- Environment variables the gateway reads (prefix RTG_) ----------------------------------
ENV_PREFIX: Final = "RTG_"


class Env:
    """Names of the gateway's settings; the operator renders these into the pod spec."""

    HOST: Final = "RTG_HOST"
    PORT: Final = "RTG_PORT"
    LOG_LEVEL: Final = "RTG_LOG_LEVEL"
    INSTANCE_ID: Final = "RTG_INSTANCE_ID"
    REDIS_URL: Final = "RTG_REDIS_URL"
    REDIS_MODE: Final = "RTG_REDIS_MODE"
    REDIS_SENTINEL_MASTER: Final = "RTG_REDIS_SENTINEL_MASTER"
    KAFKA_BOOTSTRAP_SERVERS: Final = "RTG_KAFKA_BOOTSTRAP_SERVERS"
    KAFKA_SECURITY_PROTOCOL: Final = "RTG_KAFKA_SECURITY_PROTOCOL"
    KAFKA_SASL_MECHANISM: Final = "RTG_KAFKA_SASL_MECHANISM"
    KAFKA_SASL_USERNAME: Final = "RTG_KAFKA_SASL_USERNAME"
    KAFKA_SASL_PASSWORD: Final = "RTG_KAFKA_SASL_PASSWORD"
    KAFKA_CONSUMER_GROUP: Final = "RTG_KAFKA_CONSUMER_GROUP"
    KAFKA_TOPIC_ORDER_EVENTS: Final = "RTG_KAFKA_TOPIC_ORDER_EVENTS"
    KAFKA_TOPIC_PORTER_EVENTS: Final = "RTG_KAFKA_TOPIC_PORTER_EVENTS"
    KAFKA_TOPIC_NOTIFICATION_EVENTS: Final = "RTG_KAFKA_TOPIC_NOTIFICATION_EVENTS"
    KAFKA_TOPIC_CHAT_EVENTS: Final = "RTG_KAFKA_TOPIC_CHAT_EVENTS"
    KAFKA_SSL_CAFILE: Final = "RTG_KAFKA_SSL_CAFILE"
    KAFKA_SSL_CERTFILE: Final = "RTG_KAFKA_SSL_CERTFILE"
    KAFKA_SSL_KEYFILE: Final = "RTG_KAFKA_SSL_KEYFILE"
    KAFKA_AUTO_CREATE_TOPICS: Final = "RTG_KAFKA_AUTO_CREATE_TOPICS"
    KAFKA_TOPIC_PARTITIONS: Final = "RTG_KAFKA_TOPIC_PARTITIONS"
    KAFKA_AUTO_OFFSET_RESET: Final = "RTG_KAFKA_AUTO_OFFSET_RESET"
    JWT_SECRET: Final = "RTG_JWT_SECRET"
    JWT_PUBLIC_KEY: Final = "RTG_JWT_PUBLIC_KEY"
    JWT_JWKS_URL: Final = "RTG_JWT_JWKS_URL"
    JWT_ISSUER: Final = "RTG_JWT_ISSUER"
    JWT_AUDIENCE: Final = "RTG_JWT_AUDIENCE"
    API_KEY: Final = "RTG_API_KEY"
    TLS_CERT_FILE: Final = "RTG_TLS_CERT_FILE"
    TLS_KEY_FILE: Final = "RTG_TLS_KEY_FILE"
    TRANSPORTS: Final = "RTG_TRANSPORTS"
    # permessage-deflate on WebSocket frames (off by default: ~100 KB of zlib state per socket).
    WS_COMPRESSION: Final = "RTG_WS_COMPRESSION"
    # Unsent bytes a WebSocket client may fall behind by before it is disconnected as a slow consumer.
    WS_MAX_PENDING_BYTES: Final = "RTG_WS_MAX_PENDING_BYTES"
    MAX_CONNECTIONS: Final = "RTG_MAX_CONNECTIONS"
    DRAIN_SECONDS: Final = "RTG_DRAIN_SECONDS"
    OTLP_ENDPOINT: Final = "RTG_OTLP_ENDPOINT"
    TRACE_SAMPLE_RATIO: Final = "RTG_TRACE_SAMPLE_RATIO"
    # Protection: per-user token buckets ("POINTS/WINDOW", e.g. "100/60s") and DoS limits.
    RATE_LIMIT_GENERAL: Final = "RTG_RATE_LIMIT_GENERAL"
    RATE_LIMIT_LOCATION: Final = "RTG_RATE_LIMIT_LOCATION"
    RATE_LIMIT_CHAT: Final = "RTG_RATE_LIMIT_CHAT"
    CONNECT_RATE_LIMIT: Final = "RTG_CONNECT_RATE_LIMIT"
    MAX_PAYLOAD_BYTES: Final = "RTG_MAX_PAYLOAD_BYTES"
    MAX_SUBSCRIPTIONS: Final = "RTG_MAX_SUBSCRIPTIONS"
    HANDSHAKE_TIMEOUT_SECONDS: Final = "RTG_HANDSHAKE_TIMEOUT_SECONDS"
    TRUSTED_PROXY_HEADER: Final = "RTG_TRUSTED_PROXY_HEADER"
    TRUSTED_PROXY_HOPS: Final = "RTG_TRUSTED_PROXY_HOPS"


# --- Kafka -----------------------------------------------------------------------------------
DEFAULT_TOPICS: Final[dict[str, str]] = {
    "orderEvents": "order-events",
    "porterEvents": "porter-events",
    "notificationEvents": "notification-events",
    "chatEvents": "chat-events",
}
DEFAULT_CONSUMER_GROUP: Final = "realtime-gateway-group"


# --- Prometheus metric names (the seed's, plus ours) -----------------------------------------
class Metric:
    ACTIVE_CONNECTIONS: Final = "realtime_active_connections"
    MESSAGES_RECEIVED: Final = "realtime_messages_received_total"
    MESSAGES_SENT: Final = "realtime_messages_sent_total"
    LOCATION_UPDATES: Final = "realtime_location_updates_total"
    FANOUT_LATENCY: Final = "realtime_fanout_latency_seconds"
    AUTH_ERRORS: Final = "realtime_authentication_errors_total"
    REDIS_HITS: Final = "realtime_redis_hits_total"
    CONNECTION_ATTEMPTS: Final = "realtime_connection_attempts_total"
    CONNECTION_REFUSALS: Final = "realtime_connection_refusals_total"
    DISCONNECTIONS: Final = "realtime_disconnections_total"
    SLOW_CONSUMERS: Final = "realtime_slow_consumer_disconnects_total"
    CONNECTION_DURATION: Final = "realtime_connection_duration_seconds"
    RATE_LIMITED: Final = "realtime_rate_limited_total"
    SUBSCRIPTION_REFUSALS: Final = "realtime_subscription_refusals_total"
    DELIVERY_FAILURES: Final = "realtime_delivery_failures_total"
    REDIS_ERRORS: Final = "realtime_redis_errors_total"
    KAFKA_ERRORS: Final = "realtime_kafka_errors_total"
    KAFKA_CONSUMER_LAG: Final = "realtime_kafka_consumer_lag"
    KAFKA_RECORDS: Final = "realtime_kafka_records_total"
    DEDUP_DROPS: Final = "realtime_dedup_drops_total"
    READY: Final = "realtime_ready"
    DRAINING: Final = "realtime_draining"
    CPU_LIMIT_CORES: Final = "realtime_cpu_limit_cores"
    LOCATION_LATENCY: Final = "realtime_location_latency_seconds"


# --- Kubernetes ------------------------------------------------------------------------------
CRD_GROUP: Final = "realtime.movenow.io"
CRD_VERSION: Final = "v1alpha1"
CRD_KIND: Final = "RealtimeGateway"
CRD_PLURAL: Final = "realtimegateways"
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
GATEWAY_APP_NAME: Final = "realtime-gateway"
OPERATOR_APP_NAME: Final = "realtime-gateway-operator"
