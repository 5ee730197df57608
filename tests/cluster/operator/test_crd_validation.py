"""The API server enforces the CRD's schema and CEL rules with readable messages."""

from __future__ import annotations

import copy
import json
import urllib.request
from typing import Any

import pytest

from tests.support.kube_cluster import KubeCluster, KubeError

from .helpers import RTG, apply, rtg_path

pytestmark = pytest.mark.cluster

VALID: dict[str, Any] = {
    "apiVersion": "realtime.movenow.io/v1alpha1",
    "kind": "RealtimeGateway",
    "metadata": {"name": "v"},
    "spec": {
        "image": "ghcr.io/movenow/realtime-gateway:0.1.0",
        "replicas": {"min": 2, "max": 4},
        "redis": {"url": "redis://redis:6379/0"},
        "auth": {"jwtSecretRef": {"name": "jwt"}},
    },
}


def with_spec(**changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(VALID)
    obj["spec"].update(changes)
    return obj


INVALID = [
    (
        "max-below-min",
        with_spec(replicas={"min": 5, "max": 2}),
        "replicas.min must be less than or equal to replicas.max",
    ),
    (
        "two-auth-sources",
        with_spec(auth={"jwtSecretRef": {"name": "jwt"}, "jwksUrl": "https://id.example/jwks"}),
        "auth: set exactly one of jwtSecretRef, publicKeySecretRef or jwksUrl",
    ),
    (
        "no-auth-source",
        with_spec(auth={"issuer": "x"}),
        "auth: set exactly one of jwtSecretRef, publicKeySecretRef or jwksUrl",
    ),
    ("unknown-engine", with_spec(autoscaling={"engine": "vpa"}), 'Unsupported value: "vpa"'),
    (
        "negative-connection-limit",
        with_spec(connectionLimits={"maxConnectionsPerPod": -1}),
        "should be greater than or equal to 0",
    ),
    (
        "negative-rate-limit",
        with_spec(rateLimits={"chat": {"limit": -5, "windowSeconds": 60}}),
        "should be greater than or equal to 1",
    ),
    ("negative-cpu-quantity", with_spec(resources={"limits": {"cpu": "-1"}}), "limits.cpu"),
    (
        "negative-int-quantity",
        with_spec(resources={"requests": {"memory": -5}}),
        "resource quantities must not be negative",
    ),
    (
        "both-disruption-bounds",
        with_spec(disruption={"minAvailable": 1, "maxUnavailable": 1}),
        "disruption: set minAvailable or maxUnavailable, not both",
    ),
    (
        "redis-url-and-secret",
        with_spec(redis={"url": "redis://r:6379", "secretRef": {"name": "r"}}),
        "redis: set exactly one of url or secretRef",
    ),
    ("no-websocket", with_spec(transports=["polling"]), "transports must include websocket"),
    (
        "bad-anti-affinity",
        with_spec(placement={"antiAffinity": "sometimes"}),
        'Unsupported value: "sometimes"',
    ),
]


@pytest.mark.parametrize(("case", "obj", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_cr_is_rejected_with_a_readable_message(
    kube: KubeCluster, rtg_crd: str, kube_namespace: str, case: str, obj: dict[str, Any], message: str
) -> None:
    with pytest.raises(KubeError) as err:
        apply(kube, obj, kube_namespace)
    assert err.value.status == 422, err.value
    assert message in str(err.value), str(err.value)


def test_valid_cr_gets_defaults(kube: KubeCluster, rtg_crd: str, kube_namespace: str) -> None:
    created = apply(kube, VALID, kube_namespace)
    spec = created["spec"]
    assert spec["autoscaling"] == {
        "engine": "hpa",
        "connectionsPerPod": 4000,
        "p95LatencyMs": 100,
        "cpuPercent": 70,
        "memoryPercent": 80,
        "prometheusAddress": "http://prometheus-operated.monitoring.svc:9090",
    }
    assert spec["transports"] == ["websocket"]
    assert spec["placement"]["antiAffinity"] == "preferred"
    assert spec["connectionLimits"]["drainSeconds"] == 30
    assert spec["monitoring"] == {"serviceMonitor": True, "prometheusRule": True, "grafanaDashboard": True}
    assert spec["redis"]["mode"] == "standalone"
    assert spec["auth"]["jwtSecretRef"]["key"] == "secret"


def test_kafka_topics_default_to_the_seed_four(kube: KubeCluster, rtg_crd: str, kube_namespace: str) -> None:
    created = apply(kube, with_spec(kafka={"bootstrapServers": "kafka:9092"}), kube_namespace)
    assert created["spec"]["kafka"]["topics"] == {
        "orderEvents": "order-events",
        "porterEvents": "porter-events",
        "notificationEvents": "notification-events",
        "chatEvents": "chat-events",
    }


def test_printer_columns_and_scale_subresource(kube: KubeCluster, rtg_crd: str, kube_namespace: str) -> None:
    apply(kube, VALID, kube_namespace)
    req = urllib.request.Request(
        kube.server + f"{RTG}/namespaces/{kube_namespace}/realtimegateways",
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    )
    with urllib.request.urlopen(req, context=kube.ssl_context(), timeout=10) as resp:
        table = json.loads(resp.read())
    columns = [c["name"] for c in table["columnDefinitions"] if c.get("priority", 0) == 0]
    assert columns == ["Name", "Ready", "Replicas", "Age"]
    path = rtg_path(kube_namespace, "v")
    scale = kube.request("GET", path + "/scale")
    assert scale["spec"]["replicas"] == 2
    scale["spec"]["replicas"] = 3
    kube.request("PUT", path + "/scale", scale)
    assert kube.request("GET", path)["spec"]["replicas"]["min"] == 3
    # scaling above max is refused by the same CEL rule
    scale = kube.request("GET", path + "/scale")
    scale["spec"]["replicas"] = 9
    with pytest.raises(KubeError) as err:
        kube.request("PUT", path + "/scale", scale)
    assert "replicas.min must be less than or equal to replicas.max" in str(err.value)
