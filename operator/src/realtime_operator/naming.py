"""Names and labels of every child object, derived from the RealtimeGateway's name."""

from __future__ import annotations

from typing import Final

from realtime_contract import (
    CRD_GROUP,
    GATEWAY_APP_NAME,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    OPERATOR_APP_NAME,
)

FIELD_MANAGER: Final = OPERATOR_APP_NAME
PAUSE_ANNOTATION: Final = f"{CRD_GROUP}/paused"
CONFIG_HASH_ANNOTATION: Final = f"{CRD_GROUP}/config-hash"
COMPONENT: Final = "gateway"
CONTAINER: Final = "gateway"
TLS_MOUNT: Final = "/etc/realtime-gateway/tls"


def workload(cr_name: str) -> str:
    """Deployment, Service, HPA/ScaledObject, PDB, ServiceMonitor and PrometheusRule share this name."""
    return cr_name


def configmap(cr_name: str) -> str:
    return f"{cr_name}-config"


def dashboard(cr_name: str) -> str:
    return f"{cr_name}-dashboard"


def selector_labels(cr_name: str) -> dict[str, str]:
    """The immutable Deployment selector: never add keys here (a selector change is not allowed)."""
    return {LABEL_NAME: GATEWAY_APP_NAME, LABEL_INSTANCE: cr_name}


def labels(cr_name: str) -> dict[str, str]:
    return {**selector_labels(cr_name), LABEL_COMPONENT: COMPONENT, LABEL_MANAGED_BY: OPERATOR_APP_NAME}


def selector_string(cr_name: str) -> str:
    """The label selector in the string form the scale subresource reports."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(cr_name).items()))
