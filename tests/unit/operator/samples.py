"""RealtimeGateway bodies for the builder tests (the cluster tests apply similar ones)."""

from __future__ import annotations

import copy
from typing import Any

BASE: dict[str, Any] = {
    "apiVersion": "realtime.movenow.io/v1alpha1",
    "kind": "RealtimeGateway",
    "metadata": {"name": "rtg", "namespace": "team-a", "uid": "0000-1111", "generation": 3},
    "spec": {
        "image": "ghcr.io/movenow/realtime-gateway:0.1.0",
        "replicas": {"min": 2, "max": 6},
        "redis": {"url": "redis://redis:6379/0"},
        "kafka": {"bootstrapServers": "kafka:9092"},
        "auth": {"jwtSecretRef": {"name": "jwt"}, "issuer": "movenow", "audience": "realtime"},
    },
}


def body(**spec: Any) -> dict[str, Any]:
    """The base CR with top-level spec keys replaced (None removes a key)."""
    out = copy.deepcopy(BASE)
    for key, value in spec.items():
        if value is None:
            out["spec"].pop(key, None)
        else:
            out["spec"][key] = value
    return out
