"""Payload models: strict types, ranges, finite numbers; errors are messages, not exceptions."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from realtime_gateway.transport.acks import err, error_event, is_error, ok
from realtime_gateway.transport.payloads import (
    ChatMessageSend,
    LocationUpdate,
    OfferReject,
    OrderRef,
    PayloadError,
    parse,
    timestamp_plausible,
)
from realtime_gateway.transport.server import FastJson

pytestmark = pytest.mark.unit

NOW = int(time.time() * 1000)
GOOD = {"lat": 52.5, "lng": 13.4, "timestamp": NOW}


def test_valid_location_with_optional_fields() -> None:
    loc = parse(LocationUpdate, {**GOOD, "heading": 359.5, "speed": 0, "accuracy": 3, "unknown": "kept out"})
    assert (loc.lat, loc.lng, loc.heading, loc.speed, loc.accuracy) == (52.5, 13.4, 359.5, 0, 3)
    assert "unknown" not in loc.model_dump()
    assert parse(LocationUpdate, {"lat": -90, "lng": 180, "timestamp": 0}).lat == -90


@pytest.mark.parametrize(
    "change",
    [
        {"lat": 90.0001},
        {"lat": -91},
        {"lng": 180.5},
        {"lat": math.nan},
        {"lng": math.inf},
        {"lat": "52.5"},
        {"lat": True},
        {"lat": None},
        {"timestamp": 1.5},
        {"timestamp": "now"},
        {"timestamp": -1},
        {"timestamp": 2**60},
        {"heading": 361},
        {"speed": -1},
        {"accuracy": math.nan},
    ],
)
def test_invalid_locations(change: dict[str, Any]) -> None:
    with pytest.raises(PayloadError):
        parse(LocationUpdate, {**GOOD, **change})


def test_missing_fields_and_non_objects() -> None:
    cases: list[Any] = [{"lat": 1, "lng": 2}, None, [], "x", 1, b"\x00"]
    for data in cases:
        with pytest.raises(PayloadError):
            parse(LocationUpdate, data)


def test_error_messages_name_the_field() -> None:
    with pytest.raises(PayloadError, match=r"^lat: "):
        parse(LocationUpdate, {**GOOD, "lat": 100})
    with pytest.raises(PayloadError, match=r"^payload must be an object$"):
        parse(OrderRef, ["o1"])


@pytest.mark.parametrize("order_id", ["o-1", "ORD_2024.01:7", "a" * 128])
def test_order_ids(order_id: str) -> None:
    assert parse(OrderRef, {"orderId": order_id}).orderId == order_id


@pytest.mark.parametrize("order_id", ["", "a" * 129, "-leading", "has space", "ü", "{tag}", 5, None, ["o1"]])
def test_bad_order_ids(order_id: Any) -> None:
    with pytest.raises(PayloadError):
        parse(OrderRef, {"orderId": order_id})


def test_chat_and_offer_payloads() -> None:
    msg = parse(ChatMessageSend, {"orderId": "o1", "text": "hi", "clientMessageId": "c1"})
    assert msg.text == "hi"
    for bad in ["", "x" * 2001]:
        with pytest.raises(PayloadError):
            parse(ChatMessageSend, {"orderId": "o1", "text": bad, "clientMessageId": "c1"})
    assert parse(OfferReject, {"offerId": "f1"}).reason is None


def test_timestamp_window() -> None:
    assert timestamp_plausible(NOW, NOW, 600)
    assert timestamp_plausible(NOW - 599_000, NOW, 600)
    assert not timestamp_plausible(NOW - 601_000, NOW, 600)
    assert not timestamp_plausible(NOW + 601_000, NOW, 600)


def test_ack_shapes() -> None:
    assert ok(orderId="o") == {"ok": True, "orderId": "o"}
    failure = err("RATE_LIMITED", "slow down", retryAfterMs=250)
    assert failure == {
        "ok": False,
        "error": {"code": "RATE_LIMITED", "message": "slow down", "retryAfterMs": 250},
    }
    assert is_error(failure) and not is_error(ok())
    assert error_event(failure, "location:update") == {
        "code": "RATE_LIMITED",
        "message": "slow down",
        "retryAfterMs": 250,
        "event": "location:update",
    }


def test_fast_json_falls_back_for_what_orjson_refuses() -> None:
    assert FastJson.loads('[1, {"a": "b"}]') == [1, {"a": "b"}]
    assert FastJson.loads(f"[{2**70}]") == [2**70]
    assert math.isnan(FastJson.loads("[NaN]")[0])
    assert FastJson.dumps({"a": [1, 2]}) == '{"a":[1,2]}'
    assert FastJson.dumps([2**70]) == f"[{2**70}]"
