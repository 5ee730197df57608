"""Payload builders and waiting helpers shared by the gateway integration tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
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


async def eventually(probe: Callable[[], Awaitable[Any]], *, timeout: float, what: str) -> Any:  # noqa: ASYNC109
    """Poll an async probe until it returns something truthy, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
