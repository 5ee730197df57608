"""The gateway's Socket.IO packet class answers the binary question like python-socketio's."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from socketio.packet import Packet

from realtime_gateway.fanout.manager import _encode_event
from realtime_gateway.transport.server import FastJson, GatewayPacket, _parse_event

pytestmark = pytest.mark.unit

CASES: list[Any] = [
    None,
    "x",
    1,
    1.5,
    True,
    [],
    {},
    ["porter:location", {"orderId": "o-1", "lat": 1.0, "nested": [{"a": [1, 2, None]}]}],
    b"raw",
    bytearray(b"raw"),
    ["file", {"meta": {"parts": [1, {"blob": b"\x00"}]}}],
    [{"a": "b"}, [[[[bytearray(1)]]]]],
    ("tuple", b"ignored like upstream"),
]


@pytest.mark.parametrize("data", CASES)
def test_binary_scan_matches_python_socketio(data: Any) -> None:
    assert GatewayPacket.data_is_binary(data) is Packet.data_is_binary(data)


def test_binary_payload_still_becomes_a_binary_event() -> None:
    pkt = GatewayPacket(data=["file", {"blob": b"\x01\x02"}], namespace="/client")
    encoded = pkt.encode()
    assert isinstance(encoded, list) and encoded[1] == b"\x01\x02"
    assert GatewayPacket(data=["x", {"n": 1}], namespace="/client").encode() == '2/client,["x",{"n":1}]'


EVENTS: list[Any] = [
    ["porter:location", {"orderId": "o-1", "lat": 52.5, "heading": None, "ts": 1_700_000_000_000}],
    ["chat:message", {"text": "grüß dich ✓ \u2028", "n": [1, 2.5, True, None]}],
    ["big", {"n": 2**70}],  # beyond orjson's 64 bits: the packet class's JSON
    ["keys", {1: "non-string key"}],
    ["file", {"blob": b"\x00\x01", "meta": {"parts": [b"\x02"]}}],
    ["no-args"],
]


@pytest.mark.parametrize("namespace", ["/", "/client"])
@pytest.mark.parametrize("data", EVENTS)
def test_room_emit_encoding_matches_python_socketio(
    namespace: str, data: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(GatewayPacket, "json", FastJson)  # as create_server configures it
    text, attachments = _encode_event(GatewayPacket, namespace, data)
    expected = GatewayPacket(data=data, namespace=namespace).encode()
    if isinstance(expected, list):
        assert (text.decode(), attachments) == (expected[0], expected[1:])
    else:
        assert (text.decode(), attachments) == (expected, [])


class _ServerPacket(GatewayPacket):
    json = FastJson  # as create_server configures the packet class


def _stock(data: str) -> tuple[str, int | None, Any]:
    pkt = _ServerPacket(encoded_packet=data)
    assert pkt.packet_type == 2
    return pkt.namespace or "/", pkt.id, pkt.data


@pytest.mark.parametrize(
    "data",
    [
        '2["location:update",{"lat":1.5,"lng":2,"timestamp":1}]',
        '2/porter,["location:update",{"lat":1.5}]',
        '2/porter,17["order:subscribe",{"orderId":"o-1"}]',
        '212["x"]',
        '2/client,0["x",null,[1,2]]',
        '2/admin,["é ✓",{"k":"a-b,c"}]',
    ],
)
def test_event_fast_parse_matches_python_socketio(data: str) -> None:
    assert _parse_event(data) == _stock(data)


@pytest.mark.parametrize(
    "data",
    ["2/porter", '2/porter?x=1,["a"]', '2{"a":1}', '2/p,["a",NaN]', '21-["a"]', "2", "2/p,", '2/p,1x["a"]'],
)
def test_unusual_event_shapes_take_python_socketios_path(data: str) -> None:
    assert _parse_event(data) is None


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["", "/client,", "/porter,", "/a-b,"]),
    st.one_of(st.none(), st.integers(min_value=0, max_value=10**12)),
    st.lists(
        st.one_of(st.text(max_size=5), st.integers(), st.floats(allow_nan=False), st.none()),
        min_size=1,
    ),
)
def test_event_fast_parse_round_trips(prefix: str, ack: int | None, args: list[Any]) -> None:
    data = "2" + prefix + ("" if ack is None else str(ack)) + FastJson.dumps(args)
    parsed = _parse_event(data)
    # None hands the packet to python-socketio (e.g. JSON only the stdlib reads: Infinity).
    assert parsed is None or parsed == _stock(data)
    if all(isinstance(a, str | None) for a in args):
        assert parsed is not None
