"""Metadata shared by every builder."""

from __future__ import annotations

from typing import Any

from .. import naming
from ..model import Gateway


def metadata(gw: Gateway, name: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": gw.namespace,
        "labels": {**(extra_labels or {}), **naming.labels(gw.name)},
    }
