"""The stall probe (bench/probe.py) as a process: a stall it suffers shows in its answer."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bench.servers import REPO

pytestmark = pytest.mark.unit


def test_a_stopped_probe_reports_how_late_it_woke() -> None:
    probe = subprocess.Popen(
        [sys.executable, "-m", "bench.probe", "1.5"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert probe.stdout is not None
        assert "started" in json.loads(probe.stdout.readline())  # it watches from here on
        os.kill(probe.pid, signal.SIGSTOP)
        stopped_at = time.time()
        time.sleep(0.3)  # the stall the probe must report, not a wait for a condition
        os.kill(probe.pid, signal.SIGCONT)
        out, _ = probe.communicate(timeout=30)
    finally:
        probe.kill()
    assert probe.returncode == 0
    answer = json.loads(out.splitlines()[-1])
    assert answer["intervalMs"] == 2
    late = {int(w): ms for w, ms in answer["late"].items()}
    # The 300 ms stop shows as one wake-up at least 250 ms late, in the window the stop ended in.
    stall = [w for w, ms in late.items() if ms >= 250]
    assert len(stall) == 1, late
    assert int(stopped_at * 10) <= stall[0] <= int(stopped_at * 10) + 5


@pytest.mark.parametrize("args", [[], ["soon"], ["1", "2"]])
def test_the_probe_refuses_anything_but_one_duration(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.probe", *args], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "usage" in result.stderr and not result.stdout


def test_a_run_starts_its_probe_and_gets_it_back_watching() -> None:
    from bench.scenarios import start_probe

    async def main() -> bytes:
        probe = await start_probe(0.2)
        assert probe.returncode is None
        out, _ = await asyncio.wait_for(probe.communicate(), 30)
        return out

    # ``start_probe`` took the "started" line, so only the answer is left.
    (answer,) = asyncio.run(main()).splitlines()
    assert json.loads(answer)["intervalMs"] == 2
