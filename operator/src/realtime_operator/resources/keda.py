"""KEDA ScaledObject with the same targets as the HPA (engine keda only; KEDA then owns the HPA)."""

from __future__ import annotations

from typing import Any

from realtime_contract import Metric

from .. import naming
from ..model import CAP_KEDA, Gateway
from . import deployment
from ._common import metadata

KIND = "ScaledObject"
API_VERSION = "keda.sh/v1alpha1"
CAPABILITY = CAP_KEDA


def build(gw: Gateway) -> dict[str, Any] | None:
    spec = gw.spec
    if spec.autoscaling.engine != "keda":
        return None
    a = spec.autoscaling
    sel = f'namespace="{gw.namespace}",service="{naming.workload(gw.name)}"'
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(gw, naming.workload(gw.name)),
        "spec": {
            "scaleTargetRef": deployment.scale_target_ref(gw),
            "minReplicaCount": spec.replicas.min,
            "maxReplicaCount": spec.replicas.max,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
                }
            },
            "triggers": [
                {
                    "type": "prometheus",
                    "name": "connections",
                    "metadata": {
                        "serverAddress": a.prometheus_address,
                        "query": f"sum({Metric.ACTIVE_CONNECTIONS}{{{sel}}})",
                        "threshold": str(a.connections_per_pod),
                    },
                },
                {
                    "type": "prometheus",
                    "name": "fanout-p95",
                    "metadata": {
                        "serverAddress": a.prometheus_address,
                        "query": (
                            f"histogram_quantile(0.95, sum by (le) "
                            f"(rate({Metric.FANOUT_LATENCY}_bucket{{{sel}}}[2m])))"
                        ),
                        "threshold": str(a.p95_latency_ms / 1000),
                        "metricType": "Value",
                    },
                },
                {"type": "cpu", "metricType": "Utilization", "metadata": {"value": str(a.cpu_percent)}},
                {"type": "memory", "metricType": "Utilization", "metadata": {"value": str(a.memory_percent)}},
            ],
        },
    }
