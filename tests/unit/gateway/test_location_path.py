"""The GPS stream's specialised steps give what the generic steps give: the room frame built
once per namespace, the synchronous rate-limit step, and histogram observations folded in at
collect time."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from realtime_gateway.fanout.manager import _encode_body, _encode_event, _event_args, _message_frame
from realtime_gateway.observability.metrics import LATENCY_BUCKETS, PendingCounts
from realtime_gateway.ratelimit import MemoryRateLimiter, RateDecision, RateRule
from realtime_gateway.transport.direct import DirectSocket, message_frame, write_frames
from realtime_gateway.transport.server import FastJson, GatewayPacket

pytestmark = pytest.mark.unit

EVENTS: list[tuple[str, Any]] = [
    ("porter:location", {"orderId": "o-1", "lat": 52.52, "lng": 13.4, "heading": None, "timestamp": 1}),
    ("order:status", {"text": "é ✓ " * 40}),  # a frame past 125 bytes: two-byte length
    ("big", {"blob": "x" * 70_000}),  # past 65535: eight-byte length
    ("tuple", ("a", 1, None)),
    ("no-args", None),
    ("keys", {1: "non-string key"}),  # orjson refuses: the packet class's path
    ("file", {"blob": b"\x00\x01"}),  # binary: attachments
]


@pytest.mark.parametrize("namespace", ["/", "/client", "/admin"])
@pytest.mark.parametrize(("event", "data"), EVENTS)
def test_room_frame_matches_the_per_namespace_encoding(
    namespace: str, event: str, data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(GatewayPacket, "json", FastJson)  # as create_server configures it
    args = _event_args(event, data)
    text, attachments = _encode_event(GatewayPacket, namespace, args)
    body = _encode_body(args)
    if body is None:  # orjson refused: the room path takes _emit_local, i.e. _encode_event itself
        assert event in {"keys", "file"}
        return
    assert not attachments
    assert _message_frame(namespace, body) == message_frame(text)


class FakeClock:
    def __init__(self) -> None:
        self.ms = 1_000_000.0

    def __call__(self) -> float:
        return self.ms


STEPS = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2"]),
        st.sampled_from(["location", "general"]),
        st.integers(min_value=1, max_value=3),
        st.floats(min_value=0, max_value=5_000, allow_nan=False),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(steps=STEPS, max_buckets=st.integers(min_value=1, max_value=4))
def test_refusal_is_hit_without_the_allowed_decision(
    steps: list[tuple[str, Any, int, float]], max_buckets: int
) -> None:
    rules = {"location": RateRule(5, 1.0), "general": RateRule(3, 2.0)}
    clock_a, clock_b = FakeClock(), FakeClock()
    generic = MemoryRateLimiter(rules, clock_ms=clock_a, max_buckets=max_buckets)
    fast = MemoryRateLimiter(rules, clock_ms=clock_b, max_buckets=max_buckets)
    for key, event_class, cost, advance in steps:
        clock_a.ms += advance
        clock_b.ms += advance
        decision = _run(generic.hit(key, event_class, cost))
        refused = fast.refusal(key, event_class, cost)
        if decision.allowed:
            assert refused is None
        else:
            assert refused == decision
        assert fast._buckets == generic._buckets


def _run(coro: Any) -> RateDecision:
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("the in-memory limiter does not wait")


VALUES = st.lists(
    st.one_of(
        st.sampled_from([*LATENCY_BUCKETS, 0.0, -1.0, float("inf")]),
        st.floats(min_value=-1, max_value=20, allow_nan=False),
    ),
    max_size=50,
)


def _histogram_samples(histogram: Histogram) -> dict[str, float]:
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for metric in histogram.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


@settings(max_examples=200, deadline=None)
@given(values=VALUES, nan=st.booleans())
def test_pending_observations_equal_observe(values: list[float], nan: bool) -> None:
    if nan:
        values = [*values, float("nan")]
    direct = Histogram("h", "h", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    folded = Histogram("h", "h", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    pending = PendingCounts()
    for value in values:
        direct.observe(value)
        pending.observe(folded, value)
    pending.flush()
    expected, got = _histogram_samples(direct), _histogram_samples(folded)
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        if value != value:  # a NaN sum stays NaN
            assert got[name] != got[name]
        else:
            assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
    # Flushed once: a second collect adds nothing.
    pending.flush()
    assert _histogram_samples(folded).keys() == got.keys()


def test_a_histogram_without_the_known_internals_is_observed_directly() -> None:
    class Plain:  # what a prometheus_client that renamed its internals would look like here
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, value: float) -> None:
            self.seen.append(value)

    plain, real = Plain(), Histogram("h", "h", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    pending = PendingCounts()
    pending.observe(plain, 0.25)
    pending.observe(real, 0.25)
    assert plain.seen == [0.25]  # at once, not at collect time
    assert list(pending.observations) == [real]  # the installed prometheus_client takes the fast path


class _Transport:
    def __init__(self, closing: bool = False, buffered: int = 0) -> None:
        self.written: list[bytes] = []
        self.closing, self.buffered, self.aborted = closing, buffered, False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def abort(self) -> None:
        self.aborted = True


class _Writer:
    _closing = False


def _direct(transport: _Transport | None, slow: list[str] | None = None, server: Any = None) -> DirectSocket:
    sock = DirectSocket.__new__(DirectSocket)
    sock.sid = "s"
    sock.server = server if server is not None else SimpleNamespace()
    sock._transport = transport  # type: ignore[assignment]
    sock._writer = _Writer()
    sock.max_pending_bytes = 100
    if slow is not None:
        sock.on_slow_consumer = lambda: slow.append("slow")
    return sock


async def _next_pass() -> None:
    """Let the event loop run the callbacks scheduled so far (the flush is one of them)."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_write_frames_writes_like_write_frame_and_returns_the_rest() -> None:
    slow: list[str] = []
    ok, closing, behind = _Transport(), _Transport(closing=True), _Transport(buffered=101)
    server = SimpleNamespace()
    sockets: dict[str, Any] = {
        "e-ok": _direct(ok, server=server),
        "e-closing": _direct(closing, server=server),
        "e-behind": _direct(behind, slow, server=server),
        "e-unswitched": _direct(None, server=server),
        "e-stock": object(),  # a socket on the stock path (polling, compressed)
    }
    participants = [("s-" + k[2:], k) for k in [*sockets, "e-gone"]]
    queued = write_frames(sockets, participants, b"frame")
    assert queued == [("s-unswitched", "e-unswitched"), ("s-stock", "e-stock"), ("s-gone", "e-gone")]
    assert ok.written == []  # sent when the loop's pass ends, not at the call
    await _next_pass()
    assert ok.written == [b"frame"] and not ok.aborted
    assert closing.written == []  # a connection going away drops the frame, as write_frame does
    # A slow consumer gets the frame, then its connection is cut and it stops writing directly.
    assert behind.written == [b"frame"] and behind.aborted and slow == ["slow"]
    assert sockets["e-behind"]._transport is None
    assert write_frames(sockets, [("s-behind", "e-behind")], b"next") == [("s-behind", "e-behind")]


async def test_frames_of_one_pass_go_out_in_one_write_in_call_order() -> None:
    server = SimpleNamespace()
    a, b = _Transport(), _Transport()
    sa, sb = _direct(a, server=server), _direct(b, server=server)
    for frame in (b"1", b"2", b"3"):
        assert sa.write_frame(frame)
    assert sb.write_frame(b"x")
    await _next_pass()
    assert a.written == [b"123"] and b.written == [b"x"]
    # The next pass starts a new batch.
    assert sa.write_frame(b"4")
    await _next_pass()
    assert a.written == [b"123", b"4"]


async def test_a_flush_that_fails_does_not_cost_the_other_sockets_their_frames() -> None:
    class Broken(_Transport):
        def write(self, data: bytes) -> None:
            raise RuntimeError("transport gone")

    server = SimpleNamespace()
    ok = _Transport()
    broken, fine = _direct(Broken(), server=server), _direct(ok, server=server)
    broken.write_frame(b"lost")
    fine.write_frame(b"kept")
    await _next_pass()
    assert ok.written == [b"kept"]


async def test_frames_are_dropped_when_the_writer_started_closing_before_the_flush() -> None:
    t = _Transport()
    sock = _direct(t)
    sock.write_frame(b"late")
    sock._writer = SimpleNamespace(_closing=True)  # aiohttp wrote the close frame meanwhile
    await _next_pass()
    assert t.written == []  # nothing may follow a WebSocket close frame
