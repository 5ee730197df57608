"""Prometheus-operator ServiceMonitor scraping /metrics (only when its CRD is installed)."""

from __future__ import annotations

from typing import Any

from realtime_contract import METRICS_PATH, PORT_NAME

from .. import naming
from ..model import CAP_SERVICE_MONITOR, Gateway
from ._common import metadata

KIND = "ServiceMonitor"
API_VERSION = "monitoring.coreos.com/v1"
CAPABILITY = CAP_SERVICE_MONITOR


def build(gw: Gateway) -> dict[str, Any] | None:
    spec = gw.spec
    if not spec.monitoring.service_monitor:
        return None
    endpoint: dict[str, Any] = {"port": PORT_NAME, "path": METRICS_PATH, "interval": "15s"}
    if spec.tls is not None:
        endpoint["scheme"] = "https"
        # The pod certificate names the public host, not the pod IP the scrape uses.
        endpoint["tlsConfig"] = {"insecureSkipVerify": True}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(gw, naming.workload(gw.name), spec.monitoring.labels),
        "spec": {
            "selector": {"matchLabels": naming.selector_labels(gw.name)},
            "namespaceSelector": {"matchNames": [gw.namespace]},
            "endpoints": [endpoint],
        },
    }
