"""Payload models: strict types, ranges, finite numbers; errors are messages, not exceptions."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime_gateway.transport.acks import err, error_event, is_error, ok
from realtime_gateway.transport.payloads import (
    ChatMessageSend,
    LocationUpdate,
    OfferReject,
    OrderRef,
    PayloadError,
    parse,
    parse_location,
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


# --- the GPS fast path gives the model's answer -------------------------------------------------
_numbers = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.sampled_from([0, 90, -90, 180, 360, 150, 100_000, 2**53, 2**53 + 1, -0.0, 90.0000001]),
)
_locations = st.one_of(
    st.fixed_dictionaries(
        {"lat": _numbers, "lng": _numbers, "timestamp": _numbers},
        optional={"heading": _numbers, "speed": _numbers, "accuracy": _numbers, "extra": _numbers},
    ),
    st.lists(_numbers, max_size=2),
    _numbers,
)


def _via_model(data: Any) -> tuple[str, Any]:
    try:
        return "ok", parse(LocationUpdate, data).model_dump()
    except PayloadError as exc:
        return "error", str(exc)


def _via_fast_path(data: Any) -> tuple[str, Any]:
    try:
        return "ok", parse_location(data)
    except PayloadError as exc:
        return "error", str(exc)


@settings(max_examples=500, deadline=None)
@given(_locations)
def test_parse_location_matches_the_model(data: Any) -> None:
    fast, model = _via_fast_path(data), _via_model(data)
    assert fast == model
    if fast[0] == "ok":  # same types too (ints become floats, timestamps stay ints)
        assert [type(v) for v in fast[1].values()] == [type(v) for v in model[1].values()]


def test_parse_location_keeps_the_models_field_order() -> None:
    assert list(parse_location({**GOOD, "speed": 3})) == list(LocationUpdate.model_fields)
