"""Ack shapes (contract §3): ``{"ok": true, …}`` or ``{"ok": false, "error": {"code", "message"}}``."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    VALIDATION = "VALIDATION"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    RATE_LIMITED = "RATE_LIMITED"
    CONFLICT = "CONFLICT"
    EXPIRED = "EXPIRED"
    INTERNAL = "INTERNAL"


Ack = dict[str, Any]


def ok(**fields: Any) -> Ack:
    return {"ok": True, **fields}


def err(code: str, message: str, **extra: Any) -> Ack:
    """``extra`` goes inside ``error`` (e.g. ``retryAfterMs`` for RATE_LIMITED)."""
    return {"ok": False, "error": {"code": str(code), "message": message, **extra}}


def is_error(ack: Ack) -> bool:
    return ack.get("ok") is not True


def error_event(ack: Ack, event: str) -> dict[str, Any]:
    """The payload of the ``error`` event that accompanies a failed ack."""
    error = ack.get("error") or {}
    return {**error, "event": event}
