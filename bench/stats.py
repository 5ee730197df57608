"""Pure numbers for the benchmark report: latency histograms, percentiles, step verdicts, tables.

No I/O here, so the unit tests can pin the arithmetic the report rests on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final


@dataclass
class Histogram:
    """Counts of latencies in whole milliseconds (the load generator's resolution)."""

    counts: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: Mapping[str, int] | Mapping[int, int]) -> Histogram:
        return cls({int(k): int(v) for k, v in raw.items()})

    def merge(self, other: Histogram) -> Histogram:
        out = dict(self.counts)
        for k, v in other.counts.items():
            out[k] = out.get(k, 0) + v
        return Histogram(out)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def percentile(self, p: float) -> float | None:
        """Nearest-rank percentile (p in 0..100): the smallest latency covering p % of samples."""
        if not 0 <= p <= 100:
            raise ValueError(f"percentile {p} outside 0..100")
        total = self.total
        if total == 0:
            return None
        rank = max(1, -(-p * total // 100))  # ceil(p/100 * total), at least the first sample
        seen = 0
        for value in sorted(self.counts):
            seen += self.counts[value]
            if seen >= rank:
                return float(value)
        return float(max(self.counts))

    def mean(self) -> float | None:
        total = self.total
        if total == 0:
            return None
        return sum(k * v for k, v in self.counts.items()) / total


def merge_all(hists: Iterable[Histogram]) -> Histogram:
    out = Histogram()
    for h in hists:
        out = out.merge(h)
    return out


@dataclass(frozen=True)
class StepResult:
    """One rate step of scenario L/X, summed over every load-generator process."""

    rate: float  # offered location updates per second
    seconds: float
    sent: int
    expected: int
    received: int
    hist: Histogram
    loadgen_cpu_ms: float
    server_cpu_s: float | None = None
    redis_cpu_s: float | None = None
    errors: dict[str, int] = field(default_factory=dict)
    # CPU-capped servers (bench/cpucap.py): seconds they spent throttled during the step.
    throttled_s: float | None = None

    @property
    def loss(self) -> float:
        if self.expected == 0:
            return 0.0
        return max(0, self.expected - self.received) / self.expected

    @property
    def deliveries_per_s(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0

    @property
    def incoming_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def server_us_per_delivery(self) -> float | None:
        """Server CPU per delivered message: robust to a noisy machine where latency is not.

        None when most messages were not delivered: the CPU then went to refusing or queueing them.
        """
        if self.server_cpu_s is None or self.received == 0 or self.received < 0.5 * self.expected:
            return None
        return 1e6 * self.server_cpu_s / self.received

    def held(self, p99_limit_ms: float) -> bool:
        """Held: nothing lost, the generator sent what it meant to, and p99 within the limit."""
        p99 = self.hist.percentile(99)
        return (
            self.received >= self.expected
            and self.sent >= 0.98 * self.rate * self.seconds
            and p99 is not None
            and p99 <= p99_limit_ms
        )

    def summary(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "seconds": round(self.seconds, 3),
            "sent": self.sent,
            "expected": self.expected,
            "received": self.received,
            "loss": round(self.loss, 6),
            "incoming_per_s": round(self.incoming_per_s, 1),
            "deliveries_per_s": round(self.deliveries_per_s, 1),
            "p50_ms": self.hist.percentile(50),
            "p95_ms": self.hist.percentile(95),
            "p99_ms": self.hist.percentile(99),
            "max_ms": float(max(self.hist.counts)) if self.hist.counts else None,
            "loadgen_cpu_pct": round(100 * self.loadgen_cpu_ms / 1000 / self.seconds, 1)
            if self.seconds
            else None,
            "server_cpu_pct": (
                round(100 * self.server_cpu_s / self.seconds, 1)
                if self.server_cpu_s is not None and self.seconds
                else None
            ),
            "server_us_per_delivery": (
                round(self.server_us_per_delivery, 1) if self.server_us_per_delivery is not None else None
            ),
            "redis_cpu_pct": (
                round(100 * self.redis_cpu_s / self.seconds, 1)
                if self.redis_cpu_s is not None and self.seconds
                else None
            ),
            "errors": dict(self.errors),
            **({} if self.throttled_s is None else {"throttled_s": round(self.throttled_s, 3)}),
        }


def best_held(steps: Sequence[StepResult], p99_limit_ms: float) -> StepResult | None:
    """The highest-rate step that was held (steps need not be monotone in outcome)."""
    held = [s for s in steps if s.held(p99_limit_ms)]
    return max(held, key=lambda s: s.rate) if held else None


def late_clustering(
    over_by_window: Mapping[str, int] | Mapping[int, int], worst: int = 3
) -> tuple[int, float | None]:
    """(events over the limit, the share of them in the ``worst`` windows holding most): a share near
    1 says the run's tail came in a few bursts (a stall somewhere on the machine), one near
    ``worst`` / windows that it was spread over the run."""
    counts = sorted((int(v) for v in over_by_window.values()), reverse=True)
    total = sum(counts)
    return total, (sum(counts[:worst]) / total if total else None)


def after_stalls(
    over_by_window: Mapping[str, int] | Mapping[int, int],
    probe_late: Mapping[str, float] | Mapping[int, float],
    stall_ms: float = 10.0,
    lookback: int = 3,
) -> tuple[int, float | None]:
    """(windows in which the stall probe woke ``stall_ms`` or more late, the share of the late
    events received in such a window or in the ``lookback`` windows after one). A share near 1
    says the run's tail followed stalls of the machine; near 0, that the tail was the path's own."""
    stalls = {int(w) for w, ms in probe_late.items() if ms >= stall_ms}
    total = sum(int(n) for n in over_by_window.values())
    if not total:
        return len(stalls), None
    after = sum(
        int(n)
        for w, n in over_by_window.items()
        if any(int(w) - back in stalls for back in range(lookback + 1))
    )
    return len(stalls), after / total


@dataclass(frozen=True)
class GcCycle:
    """One collection of the broker's JVM, from its ``-Xlog:gc,gc+phases`` log (epoch seconds)."""

    start: float
    end: float
    cause: str


# ``[2026-11-30T04:05:15.647+0000][19.254s] GC(2) Pause Mark Start 0.014ms``: a phase ends, and
# ``... GC(2) Garbage Collection (Warmup) 616M(10%)->224M(4%)``: the cycle ends.
_GC_LINE: Final = re.compile(r"^\[([^\]]+)\]\[[^\]]*\] GC\((\d+)\) (.*)$")
_GC_END: Final = re.compile(r"^Garbage Collection \(([^)]*)\)")


def gc_cycles(log: str) -> list[GcCycle]:
    """The completed cycles in a JVM GC log, in order: each from its first phase's line to its
    summary line (a cycle the log does not finish is left out)."""
    first: dict[int, float] = {}
    cycles: list[GcCycle] = []
    for line in log.splitlines():
        m = _GC_LINE.match(line)
        if m is None:
            continue
        at = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
        n = int(m.group(2))
        start = first.setdefault(n, at)
        end = _GC_END.match(m.group(3))
        if end is not None:
            cycles.append(GcCycle(start, at, end.group(1)))
    return cycles


def cycles_within(cycles: Iterable[GcCycle], start: float, end: float) -> list[GcCycle]:
    """The cycles that ran at any time between ``start`` and ``end``."""
    return [c for c in cycles if c.start <= end and c.end >= start]


# ZGC (JDK 17) starts cycles by its own heap-level rule until it has done this many "Warmup" cycles.
ZGC_WARMUP_CYCLES: Final = 3


def broker_gc_warm(cycles: Iterable[GcCycle]) -> bool:
    """Whether ZGC has done its warm-up cycles: from then on its cycles follow the allocation rate."""
    return sum(c.cause == "Warmup" for c in cycles) >= ZGC_WARMUP_CYCLES


def ratio(ours: float | None, reference: float | None) -> float | None:
    if ours is None or reference is None or reference == 0:
        return None
    return ours / reference


def fmt(value: float | int | str | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 100):
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def fmt_percent(share: float | None, digits: int = 1) -> str:
    """A share (0..1) as a percentage without the sign, ``n/a`` when there is none."""
    return fmt(None if share is None else 100 * share, digits)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table with right-aligned columns (the first column left-aligned)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        parts = [c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)]
        return "  ".join(parts).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])
