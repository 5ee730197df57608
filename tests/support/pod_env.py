"""A container's environment resolved as the kubelet builds it (for the operator's tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def resolve_env_entries(
    entries: list[dict[str, Any]], secret_value: Callable[[str, str], str], pod_name: str
) -> dict[str, str]:
    """The container's ``env`` entries: literal values, ``secretKeyRef`` (looked up with
    ``secret_value(secret_name, key)``) and the pod name from ``fieldRef``."""
    env: dict[str, str] = {}
    for e in entries:
        src: dict[str, Any] = e.get("valueFrom", {})
        if "secretKeyRef" in src:
            ref = src["secretKeyRef"]
            env[e["name"]] = secret_value(ref["name"], ref["key"])
        elif "fieldRef" in src:
            assert src["fieldRef"]["fieldPath"] == "metadata.name"
            env[e["name"]] = pod_name
        else:
            env[e["name"]] = e["value"]
    return env
