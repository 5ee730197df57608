"""The recovery rule and the in-memory history/presence/offline stores (embedded mode)."""

from __future__ import annotations

import pytest

from realtime_gateway.offline.queue import MemoryOfflineQueue
from realtime_gateway.presence.store import MemoryPresence
from realtime_gateway.recovery.history import Entry, MemoryHistory, Position, decide
from realtime_gateway.recovery.wiring import parse_recover

pytestmark = pytest.mark.unit


def entries(first: int, last: int) -> list[Entry]:
    return [Entry(i, "order:status", {"n": i}) for i in range(first, last + 1)]


@pytest.mark.parametrize(
    ("client", "current", "have", "recovered", "replayed"),
    [
        (Position("e1", 3), Position("e1", 6), (1, 6), True, [4, 5, 6]),
        (Position("e1", 6), Position("e1", 6), (1, 6), True, []),
        (Position("", 0), Position("e1", 2), (1, 2), True, [1, 2]),
        (Position("e1", 0), Position("e1", 2), (1, 2), True, [1, 2]),
        # the epoch changed: history was lost
        (Position("old", 3), Position("e1", 6), (1, 6), False, []),
        (Position("old", 0), Position("e1", 6), (1, 6), False, []),
        # the client claims more than the room ever had
        (Position("e1", 9), Position("e1", 6), (1, 6), False, []),
        # beyond the window: the history starts after the client's next offset
        (Position("e1", 2), Position("e1", 10), (5, 10), False, []),
        (Position("e1", 4), Position("e1", 10), (5, 10), True, [5, 6, 7, 8, 9, 10]),
        # a hole inside the range is never papered over
        (Position("e1", 0), Position("e1", 3), (2, 3), False, []),
        (Position("e1", -1), Position("e1", 3), (1, 3), False, []),
    ],
)
def test_decide(
    client: Position, current: Position, have: tuple[int, int], recovered: bool, replayed: list[int]
) -> None:
    result = decide(client, current, entries(*have))
    assert result.recovered is recovered
    assert [e.offset for e in result.events] == replayed
    assert result.position == current


async def test_memory_history_offsets_epoch_window_and_dedup() -> None:
    history = MemoryHistory(size=5)
    positions = []
    for i in range(1, 8):
        position, stamped, appended = await history.append("o1", "order:status", {"eventId": f"e{i}"})
        assert appended and stamped["offset"] == i and stamped["epoch"] == position.epoch
        positions.append(position)
    assert len({p.epoch for p in positions}) == 1
    epoch = positions[0].epoch
    # a redelivered event keeps its offset and is not stored again
    again, _, appended = await history.append("o1", "order:status", {"eventId": "e7"})
    assert (again.offset, appended) == (7, False)
    ok = await history.recover("o1", Position(epoch, 4))
    assert ok.recovered and [e.data["eventId"] for e in ok.events] == ["e5", "e6", "e7"]
    # offsets 1..2 fell out of the 5-entry window
    assert not (await history.recover("o1", Position(epoch, 1))).recovered
    assert (await history.recover("o1", Position(epoch, 2))).recovered
    # rooms are independent, each with its own epoch
    other, _, _ = await history.append("o2", "order:status", {})
    assert other.offset == 1


async def test_memory_history_forgets_ids_past_its_dedup_window() -> None:
    history = MemoryHistory(size=2)  # the window: the last 8 offsets
    for i in range(1, 13):
        await history.append("o1", "order:status", {"eventId": f"e{i}"} if i % 3 else {})
    # e4 (offset 4) left the window at offset 12: a redelivery of it is a new event now.
    position, _, appended = await history.append("o1", "order:status", {"eventId": "e4"})
    assert (position.offset, appended) == (13, True)
    position, _, appended = await history.append("o1", "order:status", {"eventId": "e7"})
    assert (position.offset, appended) == (7, False)
    assert len(history._rooms["o1"].ids) <= 8


async def test_memory_chat_history_pages_backwards() -> None:
    history = MemoryHistory()
    for i in range(1, 11):
        event = "chat:message" if i % 2 == 0 else "order:status"
        await history.append("o1", event, {"messageId": f"m{i}"} if i % 2 == 0 else {"eventId": f"s{i}"})
    last_two = await history.chat("o1", None, 2)
    assert [e.data["messageId"] for e in last_two] == ["m8", "m10"]
    older = await history.chat("o1", last_two[0].offset, 10)
    assert [e.data["messageId"] for e in older] == ["m2", "m4", "m6"]


async def test_memory_presence_devices_and_last_seen() -> None:
    presence = MemoryPresence()
    assert await presence.connected("u1", "phone") is True
    assert await presence.connected("u1", "tablet") is False
    assert await presence.disconnected("u1", "phone") is None
    [p] = await presence.query(["u1"])
    assert (p.online, p.devices, p.last_seen) == (True, 1, None)
    seen = await presence.disconnected("u1", "tablet")
    assert seen is not None
    [p] = await presence.query(["u1"])
    assert (p.online, p.devices, p.last_seen) == (False, 0, seen)


async def test_memory_offline_queue_only_when_offline_and_bounded() -> None:
    presence = MemoryPresence()
    queue = MemoryOfflineQueue(presence, size=3)
    for i in range(5):
        assert await queue.enqueue_if_offline("u1", "notification", {"n": i}) is True
    items = await queue.pending("u1")
    assert [i.data["n"] for i in items] == [2, 3, 4]
    await queue.remove("u1", items[0])
    assert [i.data["n"] for i in await queue.pending("u1")] == [3, 4]
    await presence.connected("u1", "sid")
    assert await queue.enqueue_if_offline("u1", "notification", {"n": 9}) is False


def test_parse_recover() -> None:
    auth = {
        "recover": {"o1": {"offset": 3, "epoch": "abc"}, "o2": {"offset": "x"}, "": {"offset": 1}, "o3": 5}
    }
    assert parse_recover(auth) == {"o1": Position("abc", 3), "o2": Position("", -1)}
    assert parse_recover({"token": "t"}) == {}
    assert parse_recover(None) == {}
