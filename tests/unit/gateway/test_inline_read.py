"""Event frames handled as aiohttp's parser produces them (transport/inline.py): which frames are
taken inline and which queued, and a handler that waits finishing in order, in its context."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest
from aiohttp.http_websocket import WebSocketReader

from realtime_gateway.tasks import Suspended, start_inline
from realtime_gateway.transport.inline import InlineQueue

pytestmark = pytest.mark.unit

_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("test_inline_var", default=None)


class _FlowControl:
    """What the queue asks of aiohttp's protocol: pausing and resuming the socket's reads."""

    _reading_paused = False

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        self._reading_paused = False


def _frame(text: str) -> bytes:
    payload = text.encode()
    assert len(payload) < 126
    return bytes((0x81, len(payload))) + payload


def _parts() -> tuple[InlineQueue, WebSocketReader, list[str]]:
    queue = InlineQueue(_FlowControl(), 2**16, loop=asyncio.get_running_loop())
    parser = WebSocketReader(queue, 1 << 20, compress=False, decode_text=True)
    handled: list[str] = []

    async def on_message(sid: str, packet: str) -> None:
        handled.append(f"{sid}:{packet}")

    queue.sid, queue.on_message = "s1", on_message
    return queue, parser, handled


async def _received(parser: WebSocketReader, *frames: str) -> None:
    """Feed ``frames`` in one read, as the protocol's data_received does (outside any task)."""
    asyncio.get_running_loop().call_soon(parser.feed_data, b"".join(_frame(f) for f in frames))
    await asyncio.sleep(0)


def _queued(queue: InlineQueue) -> list[Any]:
    return [msg.data for msg, _ in queue._buffer]


async def test_event_frames_are_handled_at_once_while_the_reader_waits() -> None:
    queue, parser, handled = _parts()
    queue.parked = True
    await _received(parser, '42/porter,["location:update",{}]', '42["b"]')
    assert handled == ['s1:2/porter,["location:update",{}]', 's1:2["b"]']
    assert _queued(queue) == []


async def test_frames_are_queued_while_the_reader_is_busy_or_behind_queued_ones() -> None:
    queue, parser, handled = _parts()
    await _received(parser, '42["a"]')  # the reader is handling an earlier frame
    assert handled == [] and _queued(queue) == ['42["a"]']
    queue.parked = True  # waiting, but a frame is queued: the next one goes behind it
    await _received(parser, '42["b"]')
    assert handled == [] and _queued(queue) == ['42["a"]', '42["b"]']


async def test_other_packets_take_the_queue() -> None:
    queue, parser, handled = _parts()
    queue.parked = True
    await _received(parser, "3", "40/porter,", '43["ack"]', "2probe")
    assert handled == []
    assert _queued(queue) == ["3", "40/porter,", '43["ack"]', "2probe"]


async def test_frames_parsed_when_the_reader_resumes_a_stalled_parser_are_queued() -> None:
    # Over its limit the queue pauses reads and the parser stalls; the reader's own read()
    # resumes it, inside the reader, with the queue emptied: the frames parsed there must not
    # overtake the one the reader is about to return.
    queue = InlineQueue(_FlowControl(), 8, loop=asyncio.get_running_loop())
    parser = WebSocketReader(queue, 1 << 20, compress=False, decode_text=True)
    handled: list[str] = []

    async def on_message(sid: str, packet: str) -> None:
        handled.append(packet)

    queue.on_message = on_message
    frames = [f'42["{n}{"x" * 40}"]' for n in range(3)]
    await _received(parser, *frames)  # the reader is busy: queued, and the parser stalls
    assert _queued(queue) == frames[:1] and queue._protocol._reading_paused
    queue.parked = True  # the reader waits in receive(), which reads at once
    got = []
    for _ in frames:
        got.append((await asyncio.wait_for(queue.read(), 1)).data)
    assert got == frames and handled == []


async def test_a_handler_that_waits_finishes_in_its_reader_before_later_frames() -> None:
    queue, parser, _ = _parts()
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def on_message(sid: str, packet: str) -> None:
        token = _var.set(packet)
        steps.append(f"start {packet}")
        steps.append(f"got {await gate}")
        steps.append(f"var {_var.get()}")
        _var.reset(token)  # raises if this runs in another context than the set

    queue.on_message = on_message
    queue.parked = True
    await _received(parser, '42["a"]', '42["b"]')
    assert steps == ['start 2["a"]']
    rest, later = _queued(queue)
    assert type(rest) is Suspended and later == '42["b"]'

    async def reader() -> None:
        await rest

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)
    assert not task.done()
    gate.set_result("reply")
    await asyncio.wait_for(task, 1)
    assert steps == ['start 2["a"]', "got reply", 'var 2["a"]']
    assert _var.get() is None


async def test_a_failing_handler_is_logged_and_the_next_frame_handled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue, parser, handled = _parts()
    ok = queue.on_message
    assert ok is not None

    async def on_message(sid: str, packet: str) -> None:
        if packet == '2["bad"]':
            raise ValueError("bad frame")
        await ok(sid, packet)

    queue.on_message = on_message
    queue.parked = True
    await _received(parser, '42["bad"]', '42["good"]')
    assert handled == ['s1:2["good"]'] and _queued(queue) == []
    assert "message handler error" in caplog.text and "bad frame" in caplog.text


async def test_a_handler_that_finishes_inline_runs_in_a_copy_of_the_context() -> None:
    ran: list[str | None] = []

    async def handler() -> None:
        _var.set("inside")
        ran.append(_var.get())

    assert start_inline(handler()) is None
    assert ran == ["inside"] and _var.get() is None


async def test_cancelling_the_reader_cancels_the_waiting_handler() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    outcome: list[str] = []

    async def handler() -> None:
        try:
            await gate
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    rest = start_inline(handler())
    assert rest is not None

    async def reader() -> None:
        await rest

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outcome == ["cancelled"] and gate.cancelled()


async def test_handler_errors_propagate_from_either_part() -> None:

    async def fails_at_once() -> None:
        raise ValueError("first part")

    with pytest.raises(ValueError, match="first part"):
        start_inline(fails_at_once())

    async def fails_after_a_wait() -> None:
        await asyncio.sleep(0)
        raise ValueError("second part")

    rest = start_inline(fails_after_a_wait())
    assert rest is not None
    with pytest.raises(ValueError, match="second part"):
        await rest
