"""Typed models of every client → server payload (contract §3). Parsing is the first step of
every handler; a payload that does not fit is a VALIDATION ack, never an exception."""

from __future__ import annotations

import math
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

Id = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
]
_Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class _Payload(BaseModel):
    # Unknown fields are ignored for forward compatibility; types are strict (no "1" for 1).
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class OrderRef(_Payload):
    """``order:subscribe`` / ``order:unsubscribe`` / ``chat:typing``."""

    orderId: Id


class LocationUpdate(_Payload):
    lat: Annotated[_Number, Field(ge=-90, le=90)]
    lng: Annotated[_Number, Field(ge=-180, le=180)]
    heading: Annotated[_Number, Field(ge=0, le=360)] | None = None
    speed: Annotated[_Number, Field(ge=0, le=150)] | None = None  # m/s; 150 m/s is no road vehicle
    accuracy: Annotated[_Number, Field(ge=0, le=100_000)] | None = None  # metres
    timestamp: Annotated[int, Field(ge=0, le=2**53)]  # ms since the epoch


class ChatMessageSend(_Payload):
    orderId: Id
    text: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    clientMessageId: Id


class OfferAccept(_Payload):
    offerId: Id


class OfferReject(_Payload):
    offerId: Id
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None


class PayloadError(ValueError):
    """The payload does not fit its model; ``message`` is safe to send to the client."""


M = TypeVar("M", bound=_Payload)


def parse(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise PayloadError("payload must be an object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "payload"
        raise PayloadError(f"{where}: {first.get('msg', 'invalid')}") from None


def timestamp_plausible(timestamp_ms: int, now_ms: float, max_skew_s: float) -> bool:
    """A location timestamp within ``max_skew_s`` of the server clock (either side)."""
    return math.isfinite(now_ms) and abs(timestamp_ms - now_ms) <= max_skew_s * 1000
