"""PrometheusRule with the gateway's alerts (only when the prometheus-operator CRD is installed).

The rules themselves are the shared file realtime_contract/monitoring/prometheus-rules.yaml
(a Prometheus rules file: ``groups: [...]``), so the chart, the operator and the docs agree.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any, cast

import yaml

from .. import naming
from ..model import CAP_PROMETHEUS_RULE, Gateway
from ._common import metadata

KIND = "PrometheusRule"
API_VERSION = "monitoring.coreos.com/v1"
CAPABILITY = CAP_PROMETHEUS_RULE
RULES_RESOURCE = ("realtime_contract", "monitoring/prometheus-rules.yaml")


@functools.cache
def rule_groups() -> list[dict[str, Any]]:
    package, path = RULES_RESOURCE
    text = resources.files(package).joinpath(path).read_text()
    doc = cast(dict[str, Any], yaml.safe_load(text))
    return cast(list[dict[str, Any]], doc["groups"])


def build(gw: Gateway) -> dict[str, Any] | None:
    spec = gw.spec
    if not spec.monitoring.prometheus_rule:
        return None
    groups = copy.deepcopy(rule_groups())
    for group in groups:
        # Group names must be unique across PrometheusRules loaded by one Prometheus.
        group["name"] = f"{gw.namespace}-{gw.name}-{group['name']}"
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(gw, naming.workload(gw.name), spec.monitoring.labels),
        "spec": {"groups": groups},
    }
