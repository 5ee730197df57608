"""PodDisruptionBudget: minAvailable or maxUnavailable (default maxUnavailable 1)."""

from __future__ import annotations

from typing import Any

from .. import naming
from ..model import Gateway
from ._common import metadata

KIND = "PodDisruptionBudget"
API_VERSION = "policy/v1"


def build(gw: Gateway) -> dict[str, Any]:
    d = gw.spec.disruption
    budget: dict[str, int | str]
    if d.min_available is not None:
        budget = {"minAvailable": d.min_available}
    else:
        budget = {"maxUnavailable": d.max_unavailable if d.max_unavailable is not None else 1}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(gw, naming.workload(gw.name)),
        "spec": {"selector": {"matchLabels": naming.selector_labels(gw.name)}, **budget},
    }
