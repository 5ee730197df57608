"""One pure builder per child kind; reconcile applies them in the order of ``CHILD_KINDS``.

A builder returns None when the spec does not want that child (e.g. the HPA under engine keda),
and reconcile then deletes a previous object of that kind. A kind with a ``capability`` is only
applied when the cluster serves that API; otherwise a condition says why it is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import naming
from ..model import Gateway
from . import configmap, dashboard, deployment, hpa, keda, pdb, prometheusrule, service, servicemonitor


@dataclass(frozen=True)
class ChildKind:
    api_version: str
    kind: str
    plural: str
    build: Callable[[Gateway], dict[str, Any] | None]
    capability: str | None = None
    name: Callable[[str], str] = naming.workload  # child name from the CR name


CHILD_KINDS: tuple[ChildKind, ...] = (
    ChildKind(configmap.API_VERSION, configmap.KIND, "configmaps", configmap.build, name=naming.configmap),
    ChildKind(service.API_VERSION, service.KIND, "services", service.build),
    ChildKind(deployment.API_VERSION, deployment.KIND, "deployments", deployment.build),
    ChildKind(hpa.API_VERSION, hpa.KIND, "horizontalpodautoscalers", hpa.build),
    ChildKind(keda.API_VERSION, keda.KIND, "scaledobjects", keda.build, keda.CAPABILITY),
    ChildKind(pdb.API_VERSION, pdb.KIND, "poddisruptionbudgets", pdb.build),
    ChildKind(
        servicemonitor.API_VERSION,
        servicemonitor.KIND,
        "servicemonitors",
        servicemonitor.build,
        servicemonitor.CAPABILITY,
    ),
    ChildKind(
        prometheusrule.API_VERSION,
        prometheusrule.KIND,
        "prometheusrules",
        prometheusrule.build,
        prometheusrule.CAPABILITY,
    ),
    ChildKind(dashboard.API_VERSION, dashboard.KIND, "configmaps", dashboard.build, name=naming.dashboard),
)
