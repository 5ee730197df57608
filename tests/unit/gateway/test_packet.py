"""The gateway's Socket.IO packet class answers the binary question like python-socketio's."""

from __future__ import annotations

from typing import Any

import pytest
from socketio.packet import Packet

from realtime_gateway.fanout.manager import _encode_event
from realtime_gateway.transport.server import FastJson, GatewayPacket

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
