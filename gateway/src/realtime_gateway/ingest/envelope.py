"""The event envelope shared by Kafka records and ``POST /api/events``, and one model per event type.

Parsing is strict: anything that is not a known type with a complete payload is rejected with a
human-readable reason, which the consumer logs (and skips) and the HTTP API returns as a 4xx.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

# Identifiers become Redis keys and room names: bounded, non-empty, no whitespace.
_ID_PATTERN: Final = r"^[A-Za-z0-9_.:@-]{1,128}$"
MAX_CHAT_TEXT: Final = 2000


class EnvelopeError(ValueError):
    """A record or request body that is not a valid contract event; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        str_strip_whitespace=False,
    )

    def wire(self) -> dict[str, Any]:
        """The camelCase JSON-ready dict (datetimes as ISO 8601 strings)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class _OpenModel(_Model):
    # Backends may add fields (price, addresses, ...); they pass through to clients untouched.
    model_config = ConfigDict(extra="allow")


def _id(**kwargs: Any) -> Any:
    return Field(pattern=_ID_PATTERN, **kwargs)


# --- payloads the gateway consumes ----------------------------------------------------------


class OrderCreated(_Model):
    order_id: str = _id()
    customer_id: str = _id()


class OrderAssigned(_Model):
    order_id: str = _id()
    porter_id: str = _id()


class OrderStatusChanged(_OpenModel):
    order_id: str = _id()
    status: str = Field(min_length=1, max_length=64)


class OrderClosed(_OpenModel):
    """``order.completed`` and ``order.cancelled``."""

    order_id: str = _id()


class JobOfferCreated(_OpenModel):
    offer_id: str = _id()
    order_id: str = _id()
    porter_id: str = _id()
    expires_at: AwareDatetime


class NotificationCreated(_Model):
    user_id: str = _id()
    notification_id: str = _id()
    title: str = Field(max_length=512)
    body: str = Field(max_length=8192)
    data: dict[str, Any] = Field(default_factory=dict)


class PorterAvailabilityChanged(_OpenModel):
    porter_id: str = _id()
    available: bool


class ChatMessageSent(_Model):
    order_id: str = _id()
    message_id: str = _id()
    sender_id: str = _id()
    sender_role: Literal["customer", "porter", "admin"]
    text: str = Field(min_length=1, max_length=MAX_CHAT_TEXT)
    sent_at: AwareDatetime
    client_message_id: str | None = Field(default=None, max_length=128)


# --- payloads the gateway produces (also parsed when they come back on a consumed topic) ------


class PorterLocationSampled(_Model):
    porter_id: str = _id()
    lat: float
    lng: float
    heading: float | None = None
    speed: float | None = None
    accuracy: float | None = None
    timestamp: int
    order_ids: list[str] = Field(default_factory=list)


class JobOfferDecided(_Model):
    """``job.offer.accepted`` and ``job.offer.rejected``."""

    offer_id: str = _id()
    order_id: str = _id()
    porter_id: str = _id()
    reason: str | None = Field(default=None, max_length=512)


PAYLOAD_MODELS: Final[dict[str, type[_Model]]] = {
    "order.created": OrderCreated,
    "order.assigned": OrderAssigned,
    "order.status_changed": OrderStatusChanged,
    "order.completed": OrderClosed,
    "order.cancelled": OrderClosed,
    "job.offer.created": JobOfferCreated,
    "notification.created": NotificationCreated,
    "porter.availability_changed": PorterAvailabilityChanged,
    "chat.message.sent": ChatMessageSent,
    "porter.location.sampled": PorterLocationSampled,
    "job.offer.accepted": JobOfferDecided,
    "job.offer.rejected": JobOfferDecided,
}

# Types this gateway writes itself; they come back on porter-events, which it also consumes.
PRODUCED_ONLY_TYPES: Final = frozenset(
    {"porter.location.sampled", "job.offer.accepted", "job.offer.rejected"}
)


class Envelope(_Model):
    event_id: str = _id()
    type: str = Field(min_length=1, max_length=128)
    occurred_at: AwareDatetime
    correlation_id: str | None = Field(default=None, max_length=256)
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    """A parsed envelope together with its typed payload."""

    envelope: Envelope
    payload: _Model

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def event_id(self) -> str:
        return self.envelope.event_id


def _reason(exc: ValidationError, prefix: str) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{prefix}{loc}: {err['msg']}" if loc else f"{prefix.rstrip('.')}: {err['msg']}")
    return "; ".join(parts[:5])


def parse_event(raw: bytes | str | Mapping[str, Any] | None) -> Event:
    """Parse a Kafka record value or an HTTP body into an :class:`Event`, or raise :class:`EnvelopeError`."""
    if raw is None:
        raise EnvelopeError("empty record")
    if isinstance(raw, bytes | str):
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise EnvelopeError(f"invalid JSON: {exc}") from None
    else:
        data = dict(raw)
    if not isinstance(data, dict):
        raise EnvelopeError("envelope must be a JSON object")
    try:
        envelope = Envelope.model_validate(data)
    except ValidationError as exc:
        raise EnvelopeError(_reason(exc, "")) from None
    model = PAYLOAD_MODELS.get(envelope.type)
    if model is None:
        raise EnvelopeError(f"unknown type {envelope.type!r}")
    try:
        payload = model.model_validate(envelope.payload)
    except ValidationError as exc:
        raise EnvelopeError(_reason(exc, "payload.")) from None
    return Event(envelope=envelope, payload=payload)


def build_envelope(
    event_type: str,
    payload: Mapping[str, Any],
    *,
    correlation_id: str | None = None,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """A wire envelope for a produced event; validated so the gateway never emits what it would reject."""
    data: dict[str, Any] = {
        "eventId": event_id or str(uuid.uuid4()),
        "type": event_type,
        "occurredAt": (occurred_at or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        "correlationId": correlation_id or str(uuid.uuid4()),
        "payload": dict(payload),
    }
    parse_event(data)
    return data


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
