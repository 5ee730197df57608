"""The stall probe: a process that sleeps 2 ms at a time and records, per 100 ms window, how late
it woke.

It does almost nothing, so the scheduler wakes it promptly whenever a core is free: a wake-up
10 ms or more late says that for that long no core ran it, because the whole VM paused or every
core was taken. K runs it beside each timed run and asks how many of the run's late
events came right after such a stall (``bench.stats.after_stalls``), which tells a stall of the
machine from a tail of the gateway's own.

``python -m bench.probe SECONDS`` prints two JSON lines: ``{"started": epoch seconds}`` as it
starts watching, and at the end ``{"intervalMs": 2, "late": {window: ms}}``, the window being the
epoch time in tenths of a second (as the load generator keys its late events) and ms the latest
wake-up in it, for wake-ups at least 1 ms late.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Final

INTERVAL_S: Final = 0.002


def watch(seconds: float) -> dict[int, float]:
    """Sleep ``INTERVAL_S`` at a time for ``seconds``; the latest wake-up per 100 ms window (ms)."""
    late: dict[int, float] = {}
    before = time.monotonic()
    end = before + seconds
    while before < end:
        time.sleep(INTERVAL_S)
        after = time.monotonic()
        over_ms = (after - before - INTERVAL_S) * 1000
        if over_ms >= 1:
            window = int(time.time() * 10)
            late[window] = max(late.get(window, 0.0), round(over_ms, 1))
        before = after
    return late


def main(argv: list[str]) -> int:
    try:
        (seconds,) = (float(arg) for arg in argv[1:])
    except ValueError:
        print("usage: python -m bench.probe SECONDS (a number)", file=sys.stderr)
        return 2
    print(json.dumps({"started": time.time()}), flush=True)
    print(json.dumps({"intervalMs": INTERVAL_S * 1000, "late": watch(seconds)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
