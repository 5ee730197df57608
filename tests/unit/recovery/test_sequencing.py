"""The per-room sequencing of bus messages in HoldingManager: duplicates dropped, gaps filled
from the history, in offset order."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from realtime_gateway.fanout.message import UNDECODED, decoded, read
from realtime_gateway.recovery.history import BUS_PREFIX, MemoryHistory
from realtime_gateway.recovery.manager import HoldingManager

pytestmark = pytest.mark.unit


class Recording(HoldingManager):
    def __init__(self) -> None:
        super().__init__(bus=None)
        self.delivered: list[tuple[str, Any]] = []

    def has_local(self, room: str) -> bool:
        return True

    async def _deliver(
        self,
        room: str,
        event: str,
        data: Any,
        namespaces: Any,
        skip_sid: Any,
        sent_at: Any = None,
        body: bytes | None = None,
    ) -> None:
        data = decoded(data, body)
        self.delivered.append((room, data["offset"] if isinstance(data, dict) and "offset" in data else data))


def message(room: str, data: Any) -> bytes:
    return BUS_PREFIX + orjson.dumps(
        {"r": room, "e": "order:status", "n": None, "s": None, "t": 0.0, "d": data}
    )


async def test_duplicates_dropped_and_gaps_filled_in_order() -> None:
    history = MemoryHistory()
    stamped = [(await history.append("o1", "order:status", {"eventId": f"e{i}"}))[1] for i in range(1, 7)]
    m = Recording()
    m.history = history
    for i in (1, 2, 2, 5, 4, 6):  # 2 repeated, 3 and 4 lost, 4 arrives late
        await m._on_bus_message(message("order:o1", stamped[i - 1]))
    assert [offset for _, offset in m.delivered] == [1, 2, 3, 4, 5, 6]
    # the fill reached the top of the history (3..6); the late 4 and the 6 are then duplicates
    assert (m.gaps_filled, m.duplicates_dropped) == (4, 3)


async def test_other_rooms_and_unstamped_events_pass_through() -> None:
    m = Recording()
    m.history = MemoryHistory()
    await m._on_bus_message(message("user:u1", {"n": 1}))
    await m._on_bus_message(message("order:o1", {"no": "offset"}))
    assert m.delivered == [("user:u1", {"n": 1}), ("order:o1", {"no": "offset"})]
    # a new epoch (history lost) restarts the sequence instead of looking like a duplicate
    await m._on_bus_message(message("order:o2", {"offset": 7, "epoch": "a"}))
    await m._on_bus_message(message("order:o2", {"offset": 1, "epoch": "b"}))
    assert m.delivered[-2:] == [("order:o2", 7), ("order:o2", 1)]


async def test_own_publications_are_skipped() -> None:
    m = Recording()
    await m._on_bus_message(m._prefix + b'{"r":"order:o1","e":"x","d":{}}')
    assert m.delivered == []


class Publishing:
    """A bus that keeps what is published (the Bus protocol, no Redis)."""

    def __init__(self) -> None:
        self.received = 0
        self.published: list[bytes] = []

    def set_handler(self, handler: Any) -> None:
        pass

    async def publish(self, channel: str, payload: bytes) -> None:
        self.published.append(payload)

    async def subscribe(self, channel: str) -> None:
        pass

    async def unsubscribe(self, channel: str) -> None:
        pass

    def channels(self) -> list[str]:
        return []

    async def aclose(self) -> None:
        pass


async def test_an_emit_s_message_is_sequenced_by_the_position_in_its_header() -> None:
    """A room emit publishes its data encoded once, its position in the header: the receiver
    sequences it without decoding the data, and the data decodes to what was emitted."""
    history = MemoryHistory()
    stamped = [
        (await history.append("o1", "order:status", {"eventId": f"e{i}", "note": "a\nb"}))[1]
        for i in range(1, 5)
    ]
    bus = Publishing()
    publisher = HoldingManager(bus=bus)
    for i in (1, 2, 2, 4):  # 2 repeated, 3 lost
        await publisher.emit_room("order:o1", "order:status", stamped[i - 1])

    header, data, body = read(bus.published[0])
    assert data is UNDECODED and body is not None
    assert header["p"] == [stamped[0]["epoch"], 1] and header["r"] == "order:o1"
    assert decoded(data, body) == stamped[0]

    receiver = Recording()
    receiver.history = history
    for payload in bus.published:
        await receiver._on_bus_message(payload)
    assert [offset for _, offset in receiver.delivered] == [1, 2, 3, 4]
    assert (receiver.gaps_filled, receiver.duplicates_dropped) == (2, 1)


async def test_data_that_is_not_json_is_refused_for_the_other_instances() -> None:
    bus = Publishing()
    publisher = HoldingManager(bus=bus)
    with pytest.raises(TypeError, match="cannot reach other instances"):
        await publisher.emit_room("order:o1", "order:status", {"raw": b"\x00"})
    assert bus.published == [] and publisher.published == 0
