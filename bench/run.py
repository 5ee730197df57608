"""The benchmark command: ``bench/run [--quick] [--scenarios L,C,X,K]``.

Runs each scenario against our gateway and the Node socket.io reference in one go, prints a table
with ours / reference ratios and writes every number to ``bench/results/<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import servers
from bench.scenarios import DEFAULT_CAP_SHARE, SCENARIOS, Options, report, say, steps_table

RESULTS_DIR = servers.REPO / "bench" / "results"
DEFAULT_RATES = [1000, 2500, 5000, 7500, 10000, 12500, 15000, 20000, 25000]
QUICK_RATES = [1000, 5000, 10000, 20000]
QUICK_X_RATES = [1000, 5000]
# X with a CPU cap per process: 12 % apart, so the 3-vs-1 ratio is resolved to about a tenth.
CAP_RATES = [400, 450, 500, 560, 630, 700, 790, 880, 990, 1100, 1240, 1390, 1560, 1740, 1950, 2190]
CAP_RATES += [2450, 2750, 3080, 3450, 3860, 4320, 4840, 5420, 6070, 6800]
QUICK_CAP_RATES = [500, 1000, 1500, 2000, 3000, 4000, 5000, 6000]


def raise_fd_limit() -> int:
    """Children inherit this: the C scenario holds ~15k sockets on each side."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def ensure_node_modules() -> None:
    """``npm ci`` into bench/reference once per lockfile (a stamp records which)."""
    ref = servers.REFERENCE_DIR
    lock = (ref / "package-lock.json").read_bytes()
    stamp = ref / "node_modules" / ".bench-lock"
    if stamp.exists() and stamp.read_bytes() == lock:
        return
    say("npm ci in bench/reference")
    cache = servers.cache_dir() / "npm"
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--cache", str(cache)],
        cwd=ref,
        check=True,
    )
    stamp.write_bytes(lock)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        info["mem_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        info["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    except (OSError, ValueError):
        pass
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a short run (about 2 minutes)")
    ap.add_argument("--scenarios", default="L,C,X,K", help="comma-separated subset of L,C,X,K")
    ap.add_argument("--orders", type=int, help="orders in L/X (each: 1 porter, 1 customer, 1 admin)")
    ap.add_argument("--rates", help="comma-separated location updates/s steps for L")
    ap.add_argument("--x-rates", help="comma-separated steps for X")
    ap.add_argument(
        "--cap-share",
        type=float,
        default=DEFAULT_CAP_SHARE,
        help="X again with each server process held to this share of a core (cgroup); 0 skips it",
    )
    ap.add_argument("--cap-rates", help="comma-separated steps for the CPU-capped X runs")
    ap.add_argument(
        "--cap-pairs",
        type=int,
        help="capped X pairs (1 then 3 processes) per target, the median reported (default 3; quick 1)",
    )
    ap.add_argument("--step-seconds", type=float, help="seconds of sending per step")
    ap.add_argument("--connections", type=int, help="idle sockets in C")
    ap.add_argument("--workers", type=int, default=1, help="load-generator processes in L/X")
    ap.add_argument(
        "--client",
        choices=("lean", "socket.io"),
        default="lean",
        help="L's generator client: lean.js (default) or socket.io-client (C, X and K use socket.io-client)",
    )
    ap.add_argument("--k-rate", type=int, default=5000, help="order.status_changed events/s in K")
    ap.add_argument("--targets", default="ours,reference", help="comma-separated subset of ours,reference")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="py-spy on our gateway during the L/X steps, C's connects and K (then not benchmark numbers)",
    )
    ap.add_argument(
        "--profile-memory",
        action="store_true",
        help="C on a gateway with tracemalloc, reporting allocation sites while the sockets are held",
    )
    ap.add_argument("--ours-env", action="append", default=[], help="extra KEY=VALUE for our gateway")
    ap.add_argument("--out", type=Path, help="JSON output path (default bench/results/<time>.json)")
    return ap.parse_args(argv)


def options(args: argparse.Namespace, run_dir: Path) -> Options:
    quick = bool(args.quick)
    rates = (
        [int(x) for x in args.rates.split(",")] if args.rates else (QUICK_RATES if quick else DEFAULT_RATES)
    )
    x_default = QUICK_X_RATES if quick else rates
    x_rates = [int(x) for x in args.x_rates.split(",")] if args.x_rates else x_default
    cap_default = QUICK_CAP_RATES if quick else CAP_RATES
    cap_rates = [int(x) for x in args.cap_rates.split(",")] if args.cap_rates else cap_default
    ours_env = dict(kv.split("=", 1) for kv in args.ours_env)
    return Options(
        run_dir=run_dir,
        quick=quick,
        workers=max(1, args.workers),
        client=args.client,
        orders=args.orders or (100 if quick else 300),
        rates=rates,
        x_rates=x_rates,
        cap_share=max(0.0, args.cap_share),
        cap_rates=cap_rates,
        cap_pairs=args.cap_pairs or (1 if quick else 3),
        step_seconds=args.step_seconds or (3.0 if quick else 5.0),
        drain_ms=1500 if quick else 2000,
        connections=args.connections or (1500 if quick else 15000),
        k_rate=args.k_rate,
        k_seconds=3.0 if quick else 10.0,
        ours_env=ours_env,
        profile=bool(args.profile),
        profile_memory=bool(args.profile_memory),
        targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
    )


async def amain(args: argparse.Namespace) -> int:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run_dir = servers.cache_dir() / "bench-runs" / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    opts = options(args, run_dir)
    wanted = [s.strip().upper() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; choose from L,C,X,K", file=sys.stderr)
        return 2
    fd_limit = raise_fd_limit()
    if "C" in wanted and fd_limit < opts.connections + 1000:
        opts.connections = max(1000, fd_limit - 1000)
        say(f"fd limit {fd_limit}: C capped at {opts.connections} connections")
    ensure_node_modules()
    say(f"logs in {run_dir}")
    results: dict[str, Any] = {}
    started = time.time()
    load_start = list(os.getloadavg())
    say(f"load average {load_start[0]:.1f} on {os.cpu_count()} CPUs before the run")
    for name in wanted:
        t0 = time.time()
        say(f"scenario {name}")
        try:
            results[name] = await SCENARIOS[name](opts)
        except Exception as exc:  # one broken scenario must not hide the others' numbers
            say(f"scenario {name} failed: {exc}")
            results[name] = {"error": str(exc)[:2000]}
        results.setdefault("_seconds", {})[name] = round(time.time() - t0, 1)
    doc = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        # Other jobs on the machine skew latency (not CPU per delivery): keep the load beside the numbers.
        "loadavg_start": load_start,
        "loadavg_end": list(os.getloadavg()),
        "seconds": round(time.time() - started, 1),
        "machine": machine(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
        "fd_limit": fd_limit,
        "results": results,
    }
    text = report(results)
    doc["table"] = text
    steps = steps_table(results)
    doc["steps_table"] = steps
    out = args.out or RESULTS_DIR / f"{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    print()
    if steps:
        print(steps)
        print()
    print(text)
    print(
        f"\nload average {load_start[0]:.1f} before, {os.getloadavg()[0]:.1f} after; "
        f"JSON: {out}   logs: {run_dir}   total {doc['seconds']}s"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
