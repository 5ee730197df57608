"""The RealtimeGateway spec as typed values, and the facts a builder needs beyond the spec.

Defaults mirror crds/realtimegateways.yaml (the API server applies them too); parsing here keeps
builders total even for objects that bypassed defaulting (unit tests, older stored versions).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from realtime_contract import DEFAULT_CONSUMER_GROUP, DEFAULT_TOPICS


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Replicas(_Model):
    min: int = 3
    max: int = 20


class Autoscaling(_Model):
    engine: Literal["hpa", "keda"] = "hpa"
    connections_per_pod: int = Field(4000, alias="connectionsPerPod")
    p95_latency_ms: int = Field(100, alias="p95LatencyMs")
    cpu_percent: int = Field(70, alias="cpuPercent")
    memory_percent: int = Field(80, alias="memoryPercent")
    prometheus_address: str = Field(
        "http://prometheus-operated.monitoring.svc:9090", alias="prometheusAddress"
    )


class RedisRef(_Model):
    name: str
    key: str = "url"


class Redis(_Model):
    url: str | None = None
    secret_ref: RedisRef | None = Field(None, alias="secretRef")
    mode: Literal["standalone", "sentinel", "cluster"] = "standalone"
    sentinel_master: str | None = Field(None, alias="sentinelMaster")


class KafkaSecretRef(_Model):
    name: str


class Topics(_Model):
    order_events: str = Field(DEFAULT_TOPICS["orderEvents"], alias="orderEvents")
    porter_events: str = Field(DEFAULT_TOPICS["porterEvents"], alias="porterEvents")
    notification_events: str = Field(DEFAULT_TOPICS["notificationEvents"], alias="notificationEvents")
    chat_events: str = Field(DEFAULT_TOPICS["chatEvents"], alias="chatEvents")

    def names(self) -> list[str]:
        return [self.order_events, self.porter_events, self.notification_events, self.chat_events]


class Kafka(_Model):
    bootstrap_servers: str = Field(alias="bootstrapServers")
    security_protocol: str = Field("PLAINTEXT", alias="securityProtocol")
    sasl_mechanism: str | None = Field(None, alias="saslMechanism")
    secret_ref: KafkaSecretRef | None = Field(None, alias="secretRef")
    consumer_group: str = Field(DEFAULT_CONSUMER_GROUP, alias="consumerGroup")
    topics: Topics = Field(default_factory=lambda: Topics.model_validate({}))
    partitions: int | None = None
    replication_factor: int = Field(1, alias="replicationFactor")
    manage_topics: bool = Field(True, alias="manageTopics")


class JwtSecretRef(_Model):
    name: str
    key: str = "secret"


class PublicKeyRef(_Model):
    name: str
    key: str = "public.pem"


class ApiKeyRef(_Model):
    name: str
    key: str = "api-key"


class Auth(_Model):
    jwt_secret_ref: JwtSecretRef | None = Field(None, alias="jwtSecretRef")
    public_key_secret_ref: PublicKeyRef | None = Field(None, alias="publicKeySecretRef")
    jwks_url: str | None = Field(None, alias="jwksUrl")
    issuer: str | None = None
    audience: str | None = None
    api_key_secret_ref: ApiKeyRef | None = Field(None, alias="apiKeySecretRef")


class Bucket(_Model):
    limit: int | None = None
    window_seconds: int = Field(60, alias="windowSeconds")


class RateLimits(_Model):
    general: Bucket = Field(default_factory=lambda: Bucket.model_validate({}))
    location: Bucket = Field(default_factory=lambda: Bucket.model_validate({}))
    chat: Bucket = Field(default_factory=lambda: Bucket.model_validate({}))


class ConnectionLimits(_Model):
    max_connections_per_pod: int | None = Field(None, alias="maxConnectionsPerPod")
    connect_attempts_per_ip: int | None = Field(None, alias="connectAttemptsPerIp")
    connect_window_seconds: int = Field(60, alias="connectWindowSeconds")
    max_payload_bytes: int | None = Field(None, alias="maxPayloadBytes")
    max_subscriptions_per_socket: int | None = Field(None, alias="maxSubscriptionsPerSocket")
    handshake_timeout_seconds: int | None = Field(None, alias="handshakeTimeoutSeconds")
    trusted_proxy_header: str | None = Field(None, alias="trustedProxyHeader")
    trusted_proxy_hops: int | None = Field(None, alias="trustedProxyHops")
    drain_seconds: int = Field(30, alias="drainSeconds")


class Tls(_Model):
    secret_name: str = Field(alias="secretName")


class Tracing(_Model):
    otlp_endpoint: str | None = Field(None, alias="otlpEndpoint")
    sample_ratio: float = Field(0.1, alias="sampleRatio")


class Monitoring(_Model):
    service_monitor: bool = Field(True, alias="serviceMonitor")
    prometheus_rule: bool = Field(True, alias="prometheusRule")
    grafana_dashboard: bool = Field(True, alias="grafanaDashboard")
    labels: dict[str, str] = {}


class ServiceSpec(_Model):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    port: int = 80
    annotations: dict[str, str] = {}


class TopologySpread(_Model):
    enabled: bool = True
    topology_key: str = Field("topology.kubernetes.io/zone", alias="topologyKey")
    max_skew: int = Field(1, alias="maxSkew")


class Placement(_Model):
    anti_affinity: Literal["required", "preferred"] = Field("preferred", alias="antiAffinity")
    topology_spread: TopologySpread = Field(
        default_factory=lambda: TopologySpread.model_validate({}), alias="topologySpread"
    )
    node_selector: dict[str, str] = Field({}, alias="nodeSelector")
    tolerations: list[dict[str, Any]] = []


class Disruption(_Model):
    min_available: int | str | None = Field(None, alias="minAvailable")
    max_unavailable: int | str | None = Field(None, alias="maxUnavailable")


class GatewaySpec(_Model):
    image: str
    image_pull_policy: str = Field("IfNotPresent", alias="imagePullPolicy")
    image_pull_secrets: list[str] = Field([], alias="imagePullSecrets")
    log_level: str = Field("INFO", alias="logLevel")
    replicas: Replicas = Field(default_factory=lambda: Replicas.model_validate({}))
    resources: dict[str, dict[str, int | str]] = {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"memory": "512Mi"},
    }
    autoscaling: Autoscaling = Field(default_factory=lambda: Autoscaling.model_validate({}))
    redis: Redis
    kafka: Kafka | None = None
    auth: Auth
    rate_limits: RateLimits = Field(default_factory=lambda: RateLimits.model_validate({}), alias="rateLimits")
    connection_limits: ConnectionLimits = Field(
        default_factory=lambda: ConnectionLimits.model_validate({}), alias="connectionLimits"
    )
    tls: Tls | None = None
    tracing: Tracing = Field(default_factory=lambda: Tracing.model_validate({}))
    monitoring: Monitoring = Field(default_factory=lambda: Monitoring.model_validate({}))
    transports: list[Literal["websocket", "polling"]] = ["websocket"]
    service: ServiceSpec = Field(default_factory=lambda: ServiceSpec.model_validate({}))
    placement: Placement = Field(default_factory=lambda: Placement.model_validate({}))
    disruption: Disruption = Field(default_factory=lambda: Disruption.model_validate({}))
    pod_annotations: dict[str, str] = Field({}, alias="podAnnotations")

    @property
    def polling(self) -> bool:
        return "polling" in self.transports

    def secret_names(self) -> set[str]:
        """Every Secret the pods read: a change to any of them rolls the Deployment."""
        refs: list[str | None] = [
            self.redis.secret_ref.name if self.redis.secret_ref else None,
            self.kafka.secret_ref.name if self.kafka and self.kafka.secret_ref else None,
            self.auth.jwt_secret_ref.name if self.auth.jwt_secret_ref else None,
            self.auth.public_key_secret_ref.name if self.auth.public_key_secret_ref else None,
            self.auth.api_key_secret_ref.name if self.auth.api_key_secret_ref else None,
            self.tls.secret_name if self.tls else None,
        ]
        return {r for r in refs if r}


# Cluster capabilities the builders depend on (API discovery results).
CAP_SERVICE_MONITOR = "monitoring.coreos.com/v1/ServiceMonitor"
CAP_PROMETHEUS_RULE = "monitoring.coreos.com/v1/PrometheusRule"
CAP_KEDA = "keda.sh/v1alpha1/ScaledObject"


@dataclass(frozen=True)
class Gateway:
    """What every builder receives: the CR's identity and spec plus facts gathered by reconcile."""

    name: str
    namespace: str
    spec: GatewaySpec
    # sha256 over the rendered config and the referenced Secrets' data; rolls pods when it changes
    config_hash: str = ""
    # replicas of the live Deployment (the autoscaler's decision), None before it exists
    current_replicas: int | None = None
    capabilities: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_body(
        cls,
        body: Mapping[str, Any],
        *,
        config_hash: str = "",
        current_replicas: int | None = None,
        capabilities: frozenset[str] = frozenset(),
    ) -> Gateway:
        meta = body.get("metadata", {})
        return cls(
            name=str(meta["name"]),
            namespace=str(meta.get("namespace") or "default"),
            spec=GatewaySpec.model_validate(dict(body.get("spec", {}))),
            config_hash=config_hash,
            current_replicas=current_replicas,
            capabilities=capabilities,
        )
