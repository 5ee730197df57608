"""Typed models of every client → server payload (contract §3). Parsing is the first step of
every handler; a payload that does not fit is a VALIDATION ack, never an exception."""

from __future__ import annotations

import math
from typing import Annotated, Any, Final, TypeVar

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


# Bounds of the location fields, shared by the model and its fast path below.
_LAT: Final = (-90, 90)
_LNG: Final = (-180, 180)
_HEADING: Final = (0, 360)
_SPEED: Final = (0, 150)  # m/s; 150 m/s is no road vehicle
_ACCURACY: Final = (0, 100_000)  # metres
_TIMESTAMP: Final = (0, 2**53)  # ms since the epoch


class LocationUpdate(_Payload):
    lat: Annotated[_Number, Field(ge=_LAT[0], le=_LAT[1])]
    lng: Annotated[_Number, Field(ge=_LNG[0], le=_LNG[1])]
    heading: Annotated[_Number, Field(ge=_HEADING[0], le=_HEADING[1])] | None = None
    speed: Annotated[_Number, Field(ge=_SPEED[0], le=_SPEED[1])] | None = None
    accuracy: Annotated[_Number, Field(ge=_ACCURACY[0], le=_ACCURACY[1])] | None = None
    timestamp: Annotated[int, Field(ge=_TIMESTAMP[0], le=_TIMESTAMP[1])]


_LOCATION_NUMBERS: Final = (
    ("lat", _LAT, True),
    ("lng", _LNG, True),
    ("heading", _HEADING, False),
    ("speed", _SPEED, False),
    ("accuracy", _ACCURACY, False),
)


def parse_location(data: Any) -> dict[str, Any]:
    """``parse(LocationUpdate, data).model_dump()`` for the GPS stream, the bulk of incoming
    traffic: plainly valid payloads are checked here (a tenth of pydantic's cost), anything
    else goes through the model so its error message is the model's."""
    if type(data) is dict:
        out: dict[str, Any] = {}
        for name, (low, high), required in _LOCATION_NUMBERS:
            value: Any = data.get(name)
            kind = type(value)
            if (kind is float or kind is int) and low <= value <= high:  # NaN fails both
                out[name] = float(value)
            elif value is None and not required:
                out[name] = None
            else:
                break
        else:
            timestamp: Any = data.get("timestamp")
            if type(timestamp) is int and _TIMESTAMP[0] <= timestamp <= _TIMESTAMP[1]:
                out["timestamp"] = timestamp
                return out
    return parse(LocationUpdate, data).model_dump()


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
