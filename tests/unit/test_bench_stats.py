"""The benchmark report's arithmetic: histogram percentiles, merging, step verdicts, the table."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from bench.stats import (
    Histogram,
    StepResult,
    after_stalls,
    best_held,
    broker_gc_warm,
    cycles_within,
    fmt,
    fmt_percent,
    gc_cycles,
    late_clustering,
    merge_all,
    ratio,
    table,
)

pytestmark = pytest.mark.unit


def test_percentiles_use_nearest_rank() -> None:
    h = Histogram({1: 50, 2: 45, 10: 4, 200: 1})  # 100 samples
    assert h.total == 100
    assert h.percentile(50) == 1.0
    assert h.percentile(51) == 2.0
    assert h.percentile(95) == 2.0
    assert h.percentile(96) == 10.0
    assert h.percentile(99) == 10.0
    assert h.percentile(100) == 200.0
    assert h.percentile(0) == 1.0


def test_empty_histogram_has_no_percentile() -> None:
    assert Histogram().percentile(99) is None
    assert Histogram().mean() is None
    with pytest.raises(ValueError):
        Histogram({1: 1}).percentile(101)


def test_merge_adds_counts_from_json_keys() -> None:
    a = Histogram.from_json({"3": 2, "5": 1})
    b = Histogram.from_json({"5": 3, "7": 1})
    m = merge_all([a, b])
    assert m.counts == {3: 2, 5: 4, 7: 1}
    assert m.mean() == pytest.approx((3 * 2 + 5 * 4 + 7) / 7)


def step(rate: float, received: int, p99_value: int, sent: int | None = None) -> StepResult:
    sent = int(rate * 2) if sent is None else sent
    return StepResult(
        rate=rate,
        seconds=2.0,
        sent=sent,
        expected=sent * 2,
        received=received,
        hist=Histogram({1: 98, p99_value: 2}),
        loadgen_cpu_ms=500.0,
        server_cpu_s=1.0,
    )


def test_step_verdicts_and_best_held() -> None:
    ok_low = step(1000, 4000, 20)
    ok_high = step(5000, 20000, 90)
    lossy = step(8000, 31000, 50)
    slow = step(10000, 40000, 150)
    starved = step(12000, 20000, 10, sent=10000)  # the generator could not send what it meant to
    assert ok_low.held(100) and ok_high.held(100)
    assert not lossy.held(100)
    assert lossy.loss == pytest.approx(1000 / 32000)
    assert not slow.held(100)
    assert not starved.held(100)
    assert best_held([ok_low, slow, ok_high, lossy, starved], 100) is ok_high
    assert best_held([slow], 100) is None


def test_summary_rates() -> None:
    s = step(5000, 20000, 90).summary()
    assert s["deliveries_per_s"] == 10000.0
    assert s["incoming_per_s"] == 5000.0
    assert s["p99_ms"] == 90.0
    assert s["loadgen_cpu_pct"] == 25.0
    assert s["server_cpu_pct"] == 50.0
    assert s["server_us_per_delivery"] == 50.0  # 1 s of CPU over 20,000 deliveries


def test_cpu_per_delivery_needs_most_messages_delivered() -> None:
    assert step(5000, 20000, 90).server_us_per_delivery == pytest.approx(50.0)
    assert step(5000, 9000, 90).server_us_per_delivery is None  # under half of 20,000 arrived


def test_ratio_and_format() -> None:
    assert ratio(10.0, 4.0) == 2.5
    assert ratio(None, 4.0) is None
    assert ratio(1.0, 0.0) is None
    assert fmt(None) == "n/a"
    assert fmt(12345.0) == "12,345"
    assert fmt(1.234, 2) == "1.23"
    assert fmt("x") == "x"


def test_table_aligns_columns() -> None:
    text = table(["metric", "ours"], [["a", "1"], ["longer name", "12,345"]])
    lines = text.splitlines()
    assert lines[0].startswith("metric")
    assert len({len(line) for line in lines}) == 1  # every row as wide as the header rule
    assert lines[3].endswith("12,345")


def test_pyspy_summary_counts_self_and_inclusive_time() -> None:
    from bench.profiling import summarize

    raw = "\n".join(
        [
            "main (app.py:1);handle (app.py:10);send (ws.py:5) 6",
            "main (app.py:1);handle (app.py:12);encode (json.py:7) 3",
            "main (app.py:1);idle (loop.py:2) 1",
        ]
    )
    text = summarize(raw)
    assert text.startswith("samples: 10")
    self_part, incl_part = text.split("== inclusive")
    assert "60.0%  send (ws.py:5)" in self_part
    assert "30.0%  encode (json.py:7)" in self_part
    # handle() appears at two lines but counts once per stack: 9 of 10 samples
    assert "90.0%  handle (app.py)" in incl_part
    assert "100.0%  main (app.py)" in incl_part
    assert summarize("") == "no samples"


def test_report_tolerates_missing_and_failed_parts() -> None:
    from bench.scenarios import report, steps_table

    results = {
        "L": {
            "ours": {"error": "gateway did not start"},
            "reference": {"steps": [], "best": None, "peak": None},
        },
        "K": {"ours": {"status": "not available: no Kafka"}},
    }
    text = report(results)
    assert "L embedded: max held updates/s" in text
    assert "not available: no Kafka" in text
    assert steps_table(results) == ""


def test_report_gives_k_by_its_median_run_and_lists_each() -> None:
    from bench.scenarios import report

    def run(p50: float, p99: float, over: int, share: float | None, stalls: int) -> dict[str, Any]:
        return {
            "broker_gc_cycles": stalls // 2,
            "p50_ms": p50,
            "p95_ms": p99 / 2,
            "p99_ms": p99,
            "loss": 0.0,
            "server_cpu_pct": 55.0,
            "over_target": over,
            "over_in_worst_windows": share,
            "probe_stalls": stalls,
            "probe_max_late_ms": 10.0 * stalls,
            "over_after_stalls": share and share / 2,
            "client_gc_max_ms": 1.5,
        }

    runs = [run(5.0, 63.0, 900, 0.8, 4), run(4.0, 18.0, 0, None, 0), run(6.0, 40.0, 620, 0.5, 2)]
    ours = {
        "status": "ok",
        "rate": 5000,
        **runs[2],
        "producer_cpu_pct": 15.0,
        "broker_cpu_pct": 30.0,
        "redis_cpu_pct": 14.0,
        "loadgen_cpu_pct": 15.0,
        "runs": runs,
    }
    text = report({"K": {"ours": ours, "kafka_floor": {"p50_ms": 2.0, "p99_ms": 6.0}}})
    assert "5.0 / 63.0, 4.0 / 18.0, 6.0 / 40.0" in text
    p99_row = next(line for line in text.splitlines() if line.startswith("K: p99 ms"))
    assert p99_row.split()[-2] == "40.0"
    assert "55.0 / 15.0 / 30.0 / 14.0 / 15.0" in text
    late_row = next(line for line in text.splitlines() if line.startswith("K: events over 25 ms"))
    assert "900 / 80, 0 / n/a, 620 / 50" in late_row
    stall_row = next(line for line in text.splitlines() if line.startswith("K: probe stalls"))
    assert "4 (40) / 40 / 1.5, 0 (0) / n/a / 1.5, 2 (20) / 25 / 1.5" in stall_row
    gc_row = next(line for line in text.splitlines() if line.startswith("K: the broker's GC cycles"))
    assert gc_row.split("run")[-1].split() == ["2,", "0,", "1"]


def test_after_stalls_counts_the_late_events_that_followed_a_stall_of_the_machine() -> None:
    # The probe stalled 12 ms in window 100 and 50 ms in 200 (5 ms in 300: not a stall).
    probe = {"100": 12.0, "200": 50.0, "300": 5.0}
    # Late events in 100 and 103 follow the first stall, 201 the second; 104 and 300 follow none.
    over = {"100": 10, "103": 20, "104": 30, "201": 30, "300": 10}
    stalls, share = after_stalls(over, probe)
    assert stalls == 2 and share == pytest.approx(0.6)
    # Keys as ints (the same windows), no late event, no stall.
    assert after_stalls({104: 5}, {100: 11.0}, lookback=4) == (1, 1.0)
    assert after_stalls({}, probe) == (2, None)
    assert after_stalls(over, {}) == (0, 0.0)


def test_late_clustering_tells_bursts_from_a_spread_tail() -> None:
    # Three windows hold 90 of 100 late events: the tail came in bursts.
    assert late_clustering({"1": 40, "2": 30, "3": 20, "4": 5, "5": 5}) == (100, 0.9)
    # Spread evenly over 50 windows: the three worst hold 6 %.
    total, share = late_clustering({i: 2 for i in range(50)})
    assert total == 100 and share == pytest.approx(0.06)
    assert late_clustering({}) == (0, None)
    assert (fmt_percent(0.9), fmt_percent(0.06, 0), fmt_percent(None)) == ("90.0", "6", "n/a")


def test_report_gives_x_scaling_from_the_capped_runs() -> None:
    from bench.scenarios import report, steps_table

    def run(n: int, held: float | None, share: float | None = 0.3) -> dict[str, Any]:
        best = None if held is None else {"rate": held / 2, "deliveries_per_s": held}
        step = {
            "rate": 500.0,
            "deliveries_per_s": 1000.0,
            "p50_ms": 1.0,
            "p95_ms": 2.0,
            "p99_ms": 3.0,
            "loss": 0.0,
            "server_cpu_pct": 25.0,
            "loadgen_cpu_pct": 10.0,
            **({"throttled_s": 0.25} if share else {}),
        }
        return {"instances": n, "cpu_share": share, "steps": [step], "best": best}

    x = {
        "ours": {"1": run(1, 15000.0, None), "1cap": run(1, 2480.0), "3cap": run(3, 7720.0)},
        "reference": {"1": run(1, 10000.0, None), "1cap": run(1, 2000.0), "3cap": run(3, None)},
    }
    text = report({"X": x})
    scaling = next(line for line in text.splitlines() if line.startswith("X: scaling 3 vs 1, each"))
    assert "capped at 0.30 core" in scaling
    assert scaling.split()[-2:] == ["3.11", "n/a"]  # 7720 / 2480; the reference held no step
    assert "uncapped" not in text  # no uncapped 3-process run to compare
    # Three processes held the top of their ladder: the ratio is only a lower bound.
    x["ours"]["3cap"]["steps"][0]["rate"] = 3860.0
    x["ours"]["3cap"]["best"]["rate"] = 3860.0
    lines = report({"X": x}).splitlines()
    topped = next(line for line in lines if line.startswith("X: scaling 3 vs 1, each"))
    assert "≥ 3.11" in topped
    assert "0.25" in steps_table({"X": x})  # the throttled seconds of each capped step


def test_x_scaling_is_the_median_of_the_capped_pairs() -> None:
    from bench.scenarios import CappedPair, median_pair, report, steps_table

    def run(held: float) -> dict[str, Any]:
        step = {
            "rate": held / 2,
            "deliveries_per_s": held,
            "p50_ms": 1.0,
            "p95_ms": 2.0,
            "p99_ms": 3.0,
            "loss": 0.0,
            "server_cpu_pct": 30.0,
            "loadgen_cpu_pct": 10.0,
            "throttled_s": 1.0,
        }
        return {"cpu_share": 0.3, "steps": [step, {**step, "rate": 99999.0}], "best": step}

    ours = {"1cap": run(3900.0), "3cap": run(8638.0)}  # 2.21
    ours |= {"1cap-2": run(3480.0), "3cap-2": run(11500.0)}  # 3.30
    ours |= {"1cap-3": run(2780.0), "3cap-3": run(8638.0)}  # 3.11, the median
    text = report({"X": {"ours": ours, "reference": {}}})
    lines = text.splitlines()
    scaling = next(line for line in lines if line.startswith("X: scaling 3 vs 1, each"))
    assert "(median of 3 pairs)" in scaling and scaling.split()[-2] == "3.11"
    one = next(line for line in lines if "1 process(es): max held" in line and "capped" in line)
    assert "2,780" in one  # the median pair's own held rates, not medians taken apart
    each = next(line for line in lines if line.startswith("X: scaling of each capped pair"))
    assert "2.21, 3.30, 3.11" in each
    assert "X1cap-3 ours" in steps_table({"X": {"ours": ours}})
    # A failed pair has no ratio and is passed over; an even count takes the lower middle.
    pairs = [
        CappedPair(None, 9000.0, False),
        CappedPair(3000.0, 9000.0, False),
        CappedPair(3000.0, 6000.0, False),
    ]
    assert median_pair(pairs) == pairs[2]
    assert median_pair([CappedPair(None, None, False)]) == CappedPair(None, None, False)
    assert median_pair([]) is None


def test_a_later_capped_pair_starts_three_steps_under_what_one_process_held() -> None:
    from bench.scenarios import resume_ladder

    rates = [400, 500, 630, 790, 990, 1240, 1560, 1950]
    assert resume_ladder(rates, 1560.0) == [790, 990, 1240, 1560, 1950]
    assert resume_ladder(rates, 500.0) == rates
    assert resume_ladder(rates, None) == rates


def test_the_capped_three_process_ladder_steps_at_the_target_multiple_of_one() -> None:
    from bench.scenarios import three_ladder

    assert three_ladder([400, 1240, 1560]) == [1080, 3348, 4212]
    assert three_ladder([]) == []


class FakeLadder:
    """A ladder for ``step_in_turn``: holds every rate up to ``knee``, misses the rest."""

    def __init__(
        self, label: str, knee: int, calls: list[tuple[str, int]], fail_at: int | None = None
    ) -> None:
        self.label, self.target, self.knee, self.calls, self.fail_at = label, "ours", knee, calls, fail_at
        self.failures = 0
        self.held: list[int] = []

    @property
    def done(self) -> bool:
        return self.failures >= 2

    async def step(self, rate: int) -> None:
        self.calls.append((self.label, rate))
        if rate == self.fail_at:
            raise RuntimeError("generator died")
        if rate <= self.knee:
            self.held.append(rate)
            self.failures = 0
        else:
            self.failures += 1

    def result(self) -> dict[str, Any]:
        return {"held": self.held}


def test_ladders_step_in_turn_swap_order_and_the_survivor_goes_on_alone() -> None:
    from bench.scenarios import step_in_turn

    calls: list[tuple[str, int]] = []
    ladders = {1: FakeLadder("one", 20, calls), 3: FakeLadder("three", 60, calls)}
    out: dict[int, dict[str, Any]] = {}
    asyncio.run(step_in_turn(ladders, {1: [10, 20, 30, 40, 50], 3: [30, 60, 90, 120, 150]}, out))
    # One misses 30 and 40 (done); three holds 60, misses 90 and 120 (done): 150 is never stepped.
    assert calls == [
        ("one", 10), ("three", 30),
        ("three", 60), ("one", 20),
        ("one", 30), ("three", 90),
        ("three", 120), ("one", 40),
    ]  # fmt: skip
    assert out == {1: {"held": [10, 20]}, 3: {"held": [30, 60]}}


def test_a_ladder_that_fails_is_reported_and_the_other_goes_on() -> None:
    from bench.scenarios import step_in_turn

    calls: list[tuple[str, int]] = []
    ladders = {"a": FakeLadder("a", 100, calls, fail_at=2), "b": FakeLadder("b", 100, calls)}
    out: dict[str, dict[str, Any]] = {"c": {"error": "did not start"}}
    asyncio.run(step_in_turn(ladders, {"a": [1, 2, 3], "b": [1, 2, 3]}, out))
    assert calls == [("a", 1), ("b", 1), ("b", 2), ("a", 2), ("b", 3)]
    assert out["a"] == {"error": "generator died"} and out["b"] == {"held": [1, 2, 3]}
    assert out["c"] == {"error": "did not start"}


def test_a_cpu_cap_moves_a_process_in_and_out_of_its_group() -> None:
    import subprocess
    import sys

    from bench import cpucap

    why_not = cpucap.unavailable()
    if why_not is not None:
        pytest.skip(why_not)
    with pytest.raises(ValueError, match="CPU share"):
        cpucap.CpuCap("bad", 0)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    cap = cpucap.CpuCap(f"unit-{child.pid}", 0.25)
    try:
        cap.add(child.pid)
        assert cap.pids() == [child.pid]
        assert cap.throttled_s() >= 0
        quota = cap.path / ("cpu.max" if cap.version == 2 else "cpu.cfs_quota_us")
        assert quota.read_text().split()[0] == str(round(0.25 * cpucap.PERIOD_US))
    finally:
        cap.close()
        child.kill()
        child.wait()
    assert not cap.path.exists()


# A JDK 17 ZGC log as the broker writes it (-Xlog:gc,gc+phases:...:time,uptime), trimmed: a cycle's
# phases, then its summary line; the last cycle has not finished.
ZGC_LOG = """\
[2026-11-30T04:04:56.918+0000][0.526s] Using The Z Garbage Collector
[2026-11-30T04:05:15.647+0000][19.254s] GC(2) Pause Mark Start 0.014ms
[2026-11-30T04:05:15.755+0000][19.363s] GC(2) Concurrent Mark 108.476ms
[2026-11-30T04:05:15.800+0000][19.408s] GC(2) Concurrent Relocate 24.969ms
[2026-11-30T04:05:15.800+0000][19.408s] GC(2) Garbage Collection (Warmup) 616M(10%)->224M(4%)
[2026-11-30T04:05:52.100+0000][55.700s] GC(3) Pause Mark Start 0.011ms
[2026-11-30T04:05:52.353+0000][55.961s] GC(3) Garbage Collection (Warmup) 1232M(20%)->228M(4%)
[2026-11-30T04:06:40.000+0000][103.600s] GC(4) Pause Mark Start 0.012ms
"""


def test_gc_cycles_run_from_their_first_phase_to_their_summary() -> None:
    cycles = gc_cycles(ZGC_LOG)
    assert [(c.cause, round(c.end - c.start, 3)) for c in cycles] == [("Warmup", 0.153), ("Warmup", 0.253)]
    assert cycles[0].start == pytest.approx(datetime(2026, 11, 30, 4, 5, 15, 647000, tzinfo=UTC).timestamp())
    assert gc_cycles("") == [] and gc_cycles("not a log\n[x] GC(1) nonsense") == []


def test_a_gc_cycle_counts_for_a_run_it_overlaps_at_either_end() -> None:
    (first, second) = gc_cycles(ZGC_LOG)
    assert cycles_within([first, second], first.end - 0.05, first.end + 10) == [first]
    assert cycles_within([first, second], first.start - 10, first.start + 0.01) == [first]
    assert cycles_within([first, second], first.end + 0.001, second.start - 0.001) == []
    assert cycles_within([first, second], first.start - 1, second.end + 1) == [first, second]


def test_the_broker_collector_is_warm_after_three_warmup_cycles() -> None:
    two = gc_cycles(ZGC_LOG)
    assert not broker_gc_warm(two)
    third = ZGC_LOG.replace(
        "GC(4) Pause Mark Start 0.012ms",
        "GC(4) Pause Mark Start 0.012ms\n[2026-11-30T04:06:40.200+0000][103.800s] GC(4) "
        "Garbage Collection (Warmup) 1840M(30%)->230M(4%)",
    )
    assert broker_gc_warm(gc_cycles(third))
    # Other causes (metadata, allocation rate) do not count towards it.
    assert not broker_gc_warm(gc_cycles(third.replace("(Warmup) 616M", "(Metadata GC Threshold) 616M")))
