"""The gateway's Socket.IO packet class answers the binary question like python-socketio's."""

from __future__ import annotations

from typing import Any

import pytest
from socketio.packet import Packet

from realtime_gateway.transport.server import GatewayPacket

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
