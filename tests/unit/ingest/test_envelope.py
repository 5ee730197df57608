from __future__ import annotations

from typing import Any

import orjson
import pytest

from realtime_gateway.ingest import envelope as ev

pytestmark = pytest.mark.unit

SAMPLES: dict[str, dict[str, Any]] = {
    "order.created": {"orderId": "o1", "customerId": "c1"},
    "order.assigned": {"orderId": "o1", "porterId": "p1"},
    "order.status_changed": {"orderId": "o1", "status": "picked_up", "etaMinutes": 7},
    "order.completed": {"orderId": "o1"},
    "order.cancelled": {"orderId": "o1"},
    "job.offer.created": {
        "offerId": "f1",
        "orderId": "o1",
        "porterId": "p1",
        "expiresAt": "2030-01-01T00:00:00Z",
    },
    "notification.created": {
        "userId": "c1",
        "notificationId": "n1",
        "title": "Hi",
        "body": "B",
        "data": {"k": 1},
    },
    "porter.availability_changed": {"porterId": "p1", "available": True},
    "chat.message.sent": {
        "orderId": "o1",
        "messageId": "m1",
        "senderId": "c1",
        "senderRole": "customer",
        "text": "hello",
        "sentAt": "2026-01-01T00:00:00Z",
        "clientMessageId": "cm1",
    },
    "porter.location.sampled": {"porterId": "p1", "lat": 1.0, "lng": 2.0, "timestamp": 1700000000000},
    "job.offer.accepted": {"offerId": "f1", "orderId": "o1", "porterId": "p1"},
    "job.offer.rejected": {"offerId": "f1", "orderId": "o1", "porterId": "p1", "reason": "too far"},
}


def envelope(event_type: str, payload: dict[str, Any] | None = None, **over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "eventId": "e-1",
        "type": event_type,
        "occurredAt": "2026-01-01T12:00:00Z",
        "correlationId": "corr-1",
        "payload": SAMPLES[event_type] if payload is None else payload,
    }
    data.update(over)
    return data


def test_samples_cover_every_contract_type() -> None:
    assert set(SAMPLES) == set(ev.PAYLOAD_MODELS)


@pytest.mark.parametrize("event_type", sorted(SAMPLES))
def test_every_type_parses_from_bytes(event_type: str) -> None:
    event = ev.parse_event(orjson.dumps(envelope(event_type)))
    assert event.type == event_type
    assert event.event_id == "e-1"
    assert isinstance(event.payload, ev.PAYLOAD_MODELS[event_type])


def test_open_payloads_keep_extra_fields_for_clients() -> None:
    event = ev.parse_event(envelope("order.status_changed"))
    assert event.payload.wire() == {"orderId": "o1", "status": "picked_up", "etaMinutes": 7}


def test_closed_payloads_refuse_unknown_fields() -> None:
    with pytest.raises(ev.EnvelopeError, match=r"payload\.extra"):
        ev.parse_event(envelope("order.created", {"orderId": "o1", "customerId": "c1", "extra": 1}))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "JSON object"),
        (None, "empty record"),
        (b'"text"', "JSON object"),
    ],
)
def test_unparseable_records_have_a_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(ev.EnvelopeError, match=reason):
        ev.parse_event(raw)


def test_unknown_type_is_rejected_by_name() -> None:
    with pytest.raises(ev.EnvelopeError, match=r"unknown type 'order\.teleported'"):
        ev.parse_event({**envelope("order.created"), "type": "order.teleported"})


@pytest.mark.parametrize("field", ["eventId", "type", "occurredAt", "payload"])
def test_missing_envelope_fields_are_named(field: str) -> None:
    data = envelope("order.created")
    del data[field]
    with pytest.raises(ev.EnvelopeError, match=field):
        ev.parse_event(data)


def test_missing_payload_field_is_named_with_its_path() -> None:
    with pytest.raises(ev.EnvelopeError, match=r"payload\.customerId: Field required"):
        ev.parse_event(envelope("order.created", {"orderId": "o1"}))


@pytest.mark.parametrize("bad_id", ["", "has space", "x" * 129, "a/b", "ü"])
def test_ids_are_bounded_and_key_safe(bad_id: str) -> None:
    with pytest.raises(ev.EnvelopeError, match="orderId"):
        ev.parse_event(envelope("order.completed", {"orderId": bad_id}))


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ev.EnvelopeError, match="occurredAt"):
        ev.parse_event(envelope("order.created", occurredAt="2026-01-01T12:00:00"))


def test_chat_text_limits() -> None:
    payload = dict(SAMPLES["chat.message.sent"])
    for text in ("", "x" * (ev.MAX_CHAT_TEXT + 1)):
        with pytest.raises(ev.EnvelopeError, match="text"):
            ev.parse_event(envelope("chat.message.sent", {**payload, "text": text}))
    ok = ev.parse_event(envelope("chat.message.sent", {**payload, "text": "x" * ev.MAX_CHAT_TEXT}))
    assert isinstance(ok.payload, ev.ChatMessageSent)


def test_correlation_id_is_optional() -> None:
    data = envelope("order.created")
    del data["correlationId"]
    assert ev.parse_event(data).envelope.correlation_id is None


def test_build_envelope_produces_what_parse_accepts() -> None:
    data = ev.build_envelope("job.offer.accepted", SAMPLES["job.offer.accepted"], correlation_id="c-9")
    event = ev.parse_event(orjson.dumps(data))
    assert event.envelope.correlation_id == "c-9"
    assert data["occurredAt"].endswith("Z")
    assert len(data["eventId"]) == 36


def test_build_envelope_refuses_an_invalid_payload() -> None:
    with pytest.raises(ev.EnvelopeError):
        ev.build_envelope("job.offer.accepted", {"offerId": "f1"})
