"""The ConfigMap with the gateway's non-secret settings (the Deployment reads it via envFrom)."""

from __future__ import annotations

from typing import Any

from .. import naming
from ..model import Gateway
from . import env
from ._common import metadata

KIND = "ConfigMap"
API_VERSION = "v1"


def build(gw: Gateway) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(gw, naming.configmap(gw.name)),
        "data": env.config_env(gw),
    }
