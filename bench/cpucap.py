"""A CPU share per server process, through the Linux cgroup CPU controller (CFS bandwidth).

X asks whether three processes deliver 2.7 times as much as one. On a 2-core machine three
uncapped servers, Redis and the load generator compete for the same cores, so held throughput
measures the machine. With every server process held to the same fraction of a core, three
processes have three times the CPU of one, and the rest of the machine has room for Redis and the
generator: the ratio of held rates is then the scaling itself, measured.

``unavailable()`` says why caps cannot be set here (no writable controller), else ``None``.
``CpuCap(name, share)`` makes a group allowed ``share`` of one core per ``PERIOD_US``; ``add(pid)``
moves a process (all its threads) into it; ``close()`` moves what is left back out and removes
the group. cgroup v2 (``cpu.max``) and v1 (``cpu.cfs_quota_us``) are both handled.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Final

ROOT: Final = Path("/sys/fs/cgroup")
# A short period keeps a throttled process's stall short (at most period * (1 - share)), so a
# capped server's latency reflects its CPU share, not the length of one throttling pause.
PERIOD_US: Final = 10_000


def _hierarchy() -> tuple[Path, int] | None:
    """(directory under which groups are made, cgroup version) when the CPU controller is there."""
    controllers = ROOT / "cgroup.controllers"
    if controllers.is_file() and "cpu" in controllers.read_text().split():
        return ROOT, 2
    v1 = ROOT / "cpu"
    if (v1 / "cpu.cfs_quota_us").is_file():
        return v1, 1
    return None


def unavailable() -> str | None:
    found = _hierarchy()
    if found is None:
        return f"no cgroup CPU controller under {ROOT}"
    base, _ = found
    probe = base / "rtg-bench-probe"
    try:
        probe.mkdir(exist_ok=True)
        probe.rmdir()
    except OSError as exc:
        return f"cannot create a cgroup under {base}: {exc.strerror}"
    return None


class CpuCap:
    def __init__(self, name: str, share: float) -> None:
        if not 0 < share <= 64:
            raise ValueError(f"CPU share must be in (0, 64] cores, got {share}")
        found = _hierarchy()
        if found is None:
            raise RuntimeError(f"no cgroup CPU controller under {ROOT}")
        self.base, self.version = found
        self.path = self.base / f"rtg-bench-{name}"
        self.share = share
        self.path.mkdir(exist_ok=True)
        quota = max(1000, round(share * PERIOD_US))
        if self.version == 2:
            (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]

    def throttled_s(self) -> float:
        """Seconds the group spent throttled so far (how often the cap was what held it back)."""
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines() if " " in line)
        if "throttled_usec" in stat:
            return int(stat["throttled_usec"]) / 1e6
        return int(stat.get("throttled_time", 0)) / 1e9

    def close(self) -> None:
        with contextlib.suppress(OSError):
            for pid in self.pids():
                with contextlib.suppress(OSError):
                    (self.base / "cgroup.procs").write_text(str(pid))
            self.path.rmdir()
