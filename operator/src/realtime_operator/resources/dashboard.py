"""The Grafana dashboard as a ConfigMap that Grafana's dashboard sidecar picks up by label.

The dashboard itself is the shared file realtime_contract/monitoring/grafana-dashboard.json.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any, Final

from .. import naming
from ..model import Gateway
from ._common import metadata

KIND = "ConfigMap"
API_VERSION = "v1"
# The label kube-prometheus-stack's Grafana sidecar watches by default.
SIDECAR_LABEL: Final = "grafana_dashboard"
FILE_NAME: Final = "realtime-gateway.json"


@functools.cache
def dashboard_json() -> str:
    return resources.files("realtime_contract").joinpath("monitoring/grafana-dashboard.json").read_text()


def build(gw: Gateway) -> dict[str, Any] | None:
    mon = gw.spec.monitoring
    if not mon.grafana_dashboard:
        return None
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(gw, naming.dashboard(gw.name), {**mon.labels, SIDECAR_LABEL: "1"}),
        "data": {FILE_NAME: dashboard_json()},
    }
