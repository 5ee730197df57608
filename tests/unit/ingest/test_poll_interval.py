"""The reader's poll cadence (``reader.next_interval``): every millisecond while records flow,
backing off to at most ``_POLL_MAX_S`` while none do, and kept short while parked."""

from __future__ import annotations

from realtime_gateway.ingest import reader
from realtime_gateway.ingest.reader import next_interval


def test_polls_every_millisecond_while_records_flow() -> None:
    # Records come in runs with empty polls between: a poll soon after a run keeps the pace.
    assert next_interval(reader._POLL_MIN_S, 0.0, parked=False) == reader._POLL_MIN_S
    assert next_interval(reader._POLL_MIN_S, reader._FLOWING_S / 2, parked=False) == reader._POLL_MIN_S


def test_backs_off_by_doubling_to_the_cap_once_records_stop() -> None:
    interval = reader._POLL_MIN_S
    seen = []
    for _ in range(10):
        interval = next_interval(interval, reader._FLOWING_S * 2, parked=False)
        seen.append(interval)
    assert seen[:3] == [reader._POLL_MIN_S * 2, reader._POLL_MIN_S * 4, reader._POLL_MIN_S * 8]
    assert max(seen) == reader._POLL_MAX_S and seen[-1] == reader._POLL_MAX_S


def test_a_parked_reader_looks_again_soon_however_long_it_took_nothing() -> None:
    assert next_interval(reader._POLL_MAX_S, 60.0, parked=True) == reader._POLL_MIN_S


def test_records_after_a_quiet_spell_restore_the_pace() -> None:
    assert next_interval(reader._POLL_MAX_S, 0.0, parked=False) == reader._POLL_MIN_S
