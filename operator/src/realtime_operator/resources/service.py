"""The gateway Service; polling needs ClientIP affinity because an Engine.IO session lives in one pod."""

from __future__ import annotations

from typing import Any

from realtime_contract import PORT_NAME

from .. import naming
from ..model import Gateway
from ._common import metadata

KIND = "Service"
API_VERSION = "v1"


def build(gw: Gateway) -> dict[str, Any]:
    spec = gw.spec
    meta = metadata(gw, naming.workload(gw.name))
    if spec.service.annotations:
        meta["annotations"] = spec.service.annotations
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": meta,
        "spec": {
            "type": spec.service.type,
            "selector": naming.selector_labels(gw.name),
            "ports": [
                {"name": PORT_NAME, "port": spec.service.port, "targetPort": PORT_NAME, "protocol": "TCP"}
            ],
            "sessionAffinity": "ClientIP" if spec.polling else "None",
        },
    }
