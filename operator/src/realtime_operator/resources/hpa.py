"""autoscaling/v2 HPA on connections per pod, p95 fan-out latency, CPU and memory (engine hpa only).

Connections come from the Pods metrics API and latency from the Object metrics API on the Service,
both served by a custom-metrics adapter (e.g. prometheus-adapter) from the gateway's /metrics.
"""

from __future__ import annotations

from typing import Any, Final

from realtime_contract import Metric

from .. import naming
from ..model import Gateway
from . import deployment
from ._common import metadata

KIND = "HorizontalPodAutoscaler"
API_VERSION = "autoscaling/v2"
# The recording rule / adapter series the latency target reads (p95 of the fan-out histogram).
FANOUT_P95_METRIC: Final = f"{Metric.FANOUT_LATENCY}_p95"


def build(gw: Gateway) -> dict[str, Any] | None:
    spec = gw.spec
    if spec.autoscaling.engine != "hpa":
        return None
    a = spec.autoscaling
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(gw, naming.workload(gw.name)),
        "spec": {
            "scaleTargetRef": deployment.scale_target_ref(gw),
            "minReplicas": spec.replicas.min,
            "maxReplicas": spec.replicas.max,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": Metric.ACTIVE_CONNECTIONS},
                        "target": {"type": "AverageValue", "averageValue": str(a.connections_per_pod)},
                    },
                },
                {
                    "type": "Object",
                    "object": {
                        "describedObject": {
                            "apiVersion": "v1",
                            "kind": "Service",
                            "name": naming.workload(gw.name),
                        },
                        "metric": {"name": FANOUT_P95_METRIC},
                        # milli-units of seconds: 100 ms -> "100m"
                        "target": {"type": "Value", "value": f"{a.p95_latency_ms}m"},
                    },
                },
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": a.cpu_percent},
                    },
                },
                {
                    "type": "Resource",
                    "resource": {
                        "name": "memory",
                        "target": {"type": "Utilization", "averageUtilization": a.memory_percent},
                    },
                },
            ],
            # Sockets are long-lived: scale up fast, scale down slowly so clients are not bounced.
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 30}],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                },
            },
        },
    }
