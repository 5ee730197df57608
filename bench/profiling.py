"""Profiling aids for ``bench/run --profile``.

- ``python -m bench.profiling serve``: the gateway with tracemalloc on; creating
  ``$BENCH_TRACEMALLOC_OUT`` with the suffix ``.request`` makes it write the biggest allocation
  sites (by line and by 6-frame traceback) to ``$BENCH_TRACEMALLOC_OUT``.
- ``PySpy``: ``py-spy record`` attached to a running gateway for the load steps, in raw
  (collapsed-stack) format, then ``summarize`` turns it into top self-time and inclusive frames.

Profiled runs are for finding hot spots; their throughput and RSS numbers are not the benchmark's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path


def _dump_tracemalloc(out: Path) -> None:
    snap = tracemalloc.take_snapshot().filter_traces(
        [
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        ]
    )
    total = sum(s.size for s in snap.statistics("filename"))
    lines = [f"total traced: {total / 2**20:.1f} MiB", "", "== top 40 by line"]
    lines += [str(s) for s in snap.statistics("lineno")[:40]]
    lines += ["", "== top 15 by traceback (6 frames)"]
    for stat in snap.statistics("traceback")[:15]:
        lines.append(f"{stat.size / 1024:.0f} KiB in {stat.count} blocks")
        lines += ["    " + ln for ln in stat.traceback.format()[-12:]]
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.rename(out)


def traced_serve() -> int:
    out = Path(os.environ.get("BENCH_TRACEMALLOC_OUT", "tracemalloc.txt"))
    request = out.with_suffix(".request")
    tracemalloc.start(6)

    def watch() -> None:
        # A thread polling for a request file: the event loop may sit in epoll where a Python-level
        # signal handler would wait for the next wake-up.
        while True:
            if request.exists():
                request.unlink()
                _dump_tracemalloc(out)
            time.sleep(0.2)

    threading.Thread(target=watch, name="tracemalloc-dump", daemon=True).start()
    from realtime_gateway.cli import main

    return main(["serve"])


class PySpy:
    """``py-spy record`` on one pid until ``stop``; the raw output is collapsed stacks with counts."""

    def __init__(self, pid: int, out: Path, rate: int = 250) -> None:
        self.out = out
        binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.proc = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> str:
        """Stop sampling and return the summary (or why there is none)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.out.exists():
            return f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}"
        return summarize(self.out.read_text())


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"; keep function and file:line.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})" if where else name


def summarize(raw: str, top: int = 30) -> str:
    """Top frames by self samples and functions by inclusive samples from collapsed stacks."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        self_counts[frames[-1]] += count
        seen: set[str] = set()
        for f in frames:
            fn = f.split(" (", 1)[0] + " (" + f.split(" (", 1)[1].split(":", 1)[0] + ")" if " (" in f else f
            if fn not in seen:
                seen.add(fn)
                incl_counts[fn] += count
    if total == 0:
        return "no samples"
    out = [f"samples: {total}", "", "== self time (leaf frames)"]
    out += [f"{100 * c / total:5.1f}%  {f}" for f, c in self_counts.most_common(top)]
    out += ["", "== inclusive time (functions on the stack)"]
    out += [f"{100 * c / total:5.1f}%  {f}" for f, c in incl_counts.most_common(top * 2)]
    return "\n".join(out) + "\n"


def signal_dump(out: Path, wait_s: float = 180.0) -> str:
    """Ask a ``traced_serve`` process for its tracemalloc report and return it."""
    with contextlib.suppress(FileNotFoundError):
        out.unlink()
    out.with_suffix(".request").touch()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if out.exists():
            return out.read_text()
        time.sleep(0.2)
    return "tracemalloc report did not appear"


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        print("usage: python -m bench.profiling serve", file=sys.stderr)
        sys.exit(2)
    sys.exit(traced_serve())
