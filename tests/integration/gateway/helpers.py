"""Payload builders shared by the gateway integration tests."""

from __future__ import annotations

import time
from typing import Any


def location(**overrides: Any) -> dict[str, Any]:
    return {
        "lat": 52.52,
        "lng": 13.405,
        "heading": 90.0,
        "speed": 5.0,
        "accuracy": 8.0,
        "timestamp": int(time.time() * 1000),
        **overrides,
    }
