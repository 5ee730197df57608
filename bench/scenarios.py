"""Scenarios L, C, X and K, each run against our gateway and the Node reference in turn."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import aiohttp
import orjson

from bench import cpucap, servers
from bench.loadgen import Loadgen
from bench.profiling import PySpy, signal_dump
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
    table,
)

SECRET = "bench-secret-" + "x" * 32
API_KEY = "bench-api-key"
P99_LIMIT_MS = 100.0
TARGETS = ("ours", "reference")


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# The share of a core each server process is held to in X's capped runs.
DEFAULT_CAP_SHARE: Final = 0.3


@dataclass
class Options:
    run_dir: Path
    quick: bool = False
    workers: int = 1
    # L's generator client: "lean" (bench/reference/lean.js) or "socket.io" (socket.io-client).
    client: str = "lean"
    orders: int = 300
    rates: list[int] = field(default_factory=list)
    step_seconds: float = 5.0
    drain_ms: int = 2000
    connections: int = 15000
    local_addresses: int = 64
    x_rates: list[int] = field(default_factory=list)
    # X again with every server process held to this share of a core (0: not run), on cap_rates.
    cap_share: float = DEFAULT_CAP_SHARE
    cap_rates: list[int] = field(default_factory=list)
    # Capped pairs (1 then 3 processes) per target; the scaling reported is the median pair's.
    cap_pairs: int = 3
    k_rate: int = 5000
    k_seconds: float = 10.0
    ours_env: dict[str, str] = field(default_factory=dict)
    targets: tuple[str, ...] = TARGETS
    profile: bool = False
    profile_memory: bool = False


# ---- events that authorize the orders (POST /api/events on both servers) --------------------------
def envelope(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "eventId": str(uuid.uuid4()),
        "type": kind,
        "occurredAt": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "correlationId": str(uuid.uuid4()),
        "payload": payload,
    }


def make_orders(n: int, tag: str) -> list[dict[str, str]]:
    return [
        {
            "orderId": f"{tag}-order-{i}",
            "customerId": f"{tag}-cust-{i}",
            "adminId": f"{tag}-admin-{i}",
            "porterId": f"{tag}-porter-{i}",
        }
        for i in range(n)
    ]


async def post_events(base_url: str, events: Sequence[Any], concurrency: int = 4) -> None:
    """POST each item (an envelope or a list of them) to ``/api/events``."""
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    queue = list(events)
    async with aiohttp.ClientSession() as http:

        async def worker() -> None:
            while queue:
                ev = queue.pop(0)
                async with http.post(f"{base_url}/api/events", data=json.dumps(ev), headers=headers) as r:
                    if r.status >= 300:
                        raise RuntimeError(f"POST /api/events: {r.status} {(await r.text())[:500]}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def authorize_orders(base_url: str, orders: Sequence[dict[str, str]]) -> None:
    """``order.created`` then ``order.assigned`` for every order, in batches (both servers take arrays)."""
    created = [
        envelope("order.created", {"orderId": o["orderId"], "customerId": o["customerId"]}) for o in orders
    ]
    assigned = [
        envelope("order.assigned", {"orderId": o["orderId"], "porterId": o["porterId"]}) for o in orders
    ]
    for events in (created, assigned):
        await post_events(base_url, [events[i : i + 200] for i in range(0, len(events), 200)])


# ---- server start-up per target ---------------------------------------------------------------
def start_targets(
    target: str,
    opts: Options,
    name: str,
    count: int,
    redis_url: str | None,
    kafka: str | None = None,
    traced: bool = False,
) -> list[servers.Server]:
    log_dir = opts.run_dir / "logs"
    out: list[servers.Server] = []
    try:
        for i in range(count):
            if target == "ours":
                # The location limiter still runs on every update (its cost is part of the job); the
                # ceiling is raised because a few hundred porters here stand in for many thousands.
                env = {"RTG_RATE_LIMIT_LOCATION": "1000000/60s", **opts.ours_env}
                if redis_url:
                    env["RTG_REDIS_URL"] = redis_url
                if kafka:
                    env["RTG_KAFKA_BOOTSTRAP_SERVERS"] = kafka
                module = "realtime_gateway"
                if traced:
                    module = "bench.profiling"
                    env["BENCH_TRACEMALLOC_OUT"] = str(opts.run_dir / f"{name}-tracemalloc.txt")
                out.append(
                    servers.start_ours(
                        f"{name}-ours-{i}",
                        log_dir,
                        secret=SECRET,
                        api_key=API_KEY,
                        extra_env=env,
                        module=module,
                    )
                )
            else:
                out.append(
                    servers.start_reference(
                        f"{name}-ref-{i}", log_dir, secret=SECRET, api_key=API_KEY, redis_url=redis_url
                    )
                )
    except BaseException:
        servers.stop_all(out)
        raise
    return out


def split(items: Sequence[dict[str, str]], parts: int) -> list[list[dict[str, str]]]:
    return [list(items[i::parts]) for i in range(parts)]


# ---- L / X: stepped location fan-out -------------------------------------------------------------
class Ladder:
    """Servers for one target with a customer and an admin subscribed to each order, stepped
    through rates one ``step`` at a time (``async with``: started on entry, stopped on exit).
    ``cpu_share``: each server process is held to that share of a core (``bench/cpucap.py``)."""

    def __init__(
        self,
        target: str,
        opts: Options,
        label: str,
        instances: int,
        redis: servers.Redis | None = None,
        cpu_share: float | None = None,
    ) -> None:
        self.target, self.opts, self.label, self.instances = target, opts, label, instances
        self.redis, self.cpu_share = redis, cpu_share
        self.tag = f"{label}-{target}".replace(" ", "")
        self.procs: list[servers.Server] = []
        self.caps: list[cpucap.CpuCap] = []
        self.gens: list[Loadgen] = []
        self.steps: list[StepResult] = []
        self.retries = 0
        self.refusals: dict[str, int] = {}
        self.failures = 0
        self.spy: PySpy | None = None

    @property
    def done(self) -> bool:
        # Two failed steps in a row: higher rates only pile up more backlog.
        return self.failures >= 2 or (self.opts.quick and self.failures >= 1)

    async def __aenter__(self) -> Ladder:
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    async def _start(self) -> None:
        opts, tag, label = self.opts, self.tag, self.label
        orders = make_orders(opts.orders, tag)
        self.procs = start_targets(
            self.target, opts, tag, self.instances, self.redis.url if self.redis else None
        )
        if self.cpu_share is not None:
            for i, proc in enumerate(self.procs):
                self.caps.append(cpucap.CpuCap(f"{tag}-{i}", self.cpu_share))
                self.caps[-1].add(proc.pid)
        await authorize_orders(self.procs[0].url, orders)
        urls = [p.url for p in self.procs]
        for w, part in enumerate(split(orders, opts.workers)):
            cfg = {
                "mode": "L",
                "workerId": w,
                "secret": SECRET,
                "urls": urls,
                "orders": part,
                "subscribersPerOrder": 2,
                # X keeps socket.io-client: its generator is far from busy there, and its scaling
                # has been measured with that client since the eighth round.
                "client": opts.client if label == "L" else "socket.io",
                "localAddresses": opts.local_addresses,
                "connectConcurrency": 50,
            }
            self.gens.append(Loadgen(f"{tag}-loadgen-{w}", cfg, opts.run_dir / "logs"))
        readies = await asyncio.gather(*(g.start(wait_s=180) for g in self.gens))
        self.retries = sum(int(r.get("connectRetries", 0)) for r in readies)
        for r in readies:
            for code, n in (r.get("connectRefusals") or {}).items():
                self.refusals[code] = self.refusals.get(code, 0) + int(n)
        say(
            f"{label} {self.target}: {sum(r['sockets'] for r in readies)} sockets ready on "
            f"{self.instances} process(es)"
            + (f", after {self.retries} connect retries {json.dumps(self.refusals)}" if self.retries else "")
        )
        if opts.profile and self.target == "ours":
            self.spy = PySpy(self.procs[0].pid, opts.run_dir / f"{tag}-pyspy.txt")

    async def warm(self, rate: int) -> None:
        """Unreported load at half ``rate``: first-use costs (imports, caches, JIT in Node) stay
        out of the first step."""
        opts = self.opts
        warm_s = 1 if opts.quick else 2
        warm = {"cmd": "step", "seconds": warm_s, "startAt": int(time.time() * 1000) + 200, "drainMs": 1000}
        await asyncio.gather(
            *(g.command({**warm, "rate": rate / opts.workers / 2}, wait_s=60) for g in self.gens)
        )

    async def step(self, rate: int) -> StepResult:
        opts, procs, caps, redis = self.opts, self.procs, self.caps, self.redis
        start_at = int(time.time() * 1000) + 300
        cpu0 = sum(servers.cpu_seconds(p.pid) for p in procs)
        throttled0 = sum(c.throttled_s() for c in caps)
        rcpu0 = servers.cpu_seconds(redis.proc.pid) if redis else 0.0
        cmd = {"cmd": "step", "seconds": opts.step_seconds, "startAt": start_at, "drainMs": opts.drain_ms}
        results = await asyncio.gather(
            *(
                g.command(
                    {**cmd, "rate": rate / opts.workers},
                    wait_s=opts.step_seconds + opts.drain_ms / 1000 + 60,
                )
                for g in self.gens
            )
        )
        cpu1 = sum(servers.cpu_seconds(p.pid) for p in procs)
        rcpu1 = servers.cpu_seconds(redis.proc.pid) if redis else 0.0
        errors: dict[str, int] = {}
        for r in results:
            for code, n in (r.get("errors") or {}).items():
                errors[code] = errors.get(code, 0) + int(n)
        step = StepResult(
            rate=float(rate),
            seconds=max(r["seconds"] for r in results),
            sent=sum(r["sent"] for r in results),
            expected=sum(r["expected"] for r in results),
            received=sum(r["received"] for r in results),
            hist=merge_all(Histogram.from_json(r["hist"]) for r in results),
            loadgen_cpu_ms=max(r["cpuMs"] for r in results),
            server_cpu_s=cpu1 - cpu0,
            redis_cpu_s=rcpu1 - rcpu0 if redis else None,
            errors=errors,
            throttled_s=sum(c.throttled_s() for c in caps) - throttled0 if caps else None,
        )
        self.steps.append(step)
        s = step.summary()
        say(
            f"{self.label} {self.target} rate {rate}/s: deliveries {fmt(s['deliveries_per_s'])}/s "
            f"p50 {fmt(s['p50_ms'])} p95 {fmt(s['p95_ms'])} p99 {fmt(s['p99_ms'])} ms "
            f"loss {s['loss']:.4f} server cpu {fmt(s['server_cpu_pct'])}% "
            f"loadgen cpu {fmt(s['loadgen_cpu_pct'])}%"
            f"{' redis cpu ' + fmt(s['redis_cpu_pct']) + '%' if redis else ''}"
            f"{' throttled ' + fmt(s['throttled_s'], 2) + ' s' if caps else ''}"
            f"{' errors ' + json.dumps(errors) if errors else ''}"
            f"{'' if step.held(P99_LIMIT_MS) else '  (not held)'}"
        )
        self.failures = 0 if step.held(P99_LIMIT_MS) else self.failures + 1
        return step

    async def _stop(self) -> None:
        if self.spy is not None:
            profile_path = self.opts.run_dir / f"profile-{self.tag}.txt"
            profile_path.write_text(self.spy.stop())
            self.spy = None
            say(f"{self.label} {self.target}: py-spy profile of process 0 in {profile_path}")
        for g in self.gens:
            await g.close()
        servers.stop_all(self.procs)
        for cap in self.caps:
            cap.close()

    def result(self) -> dict[str, Any]:
        steps = self.steps
        best = best_held(steps, P99_LIMIT_MS)
        peak = max(steps, key=lambda s: s.deliveries_per_s) if steps else None
        return {
            "target": self.target,
            "instances": self.instances,
            "redis": self.redis is not None,
            "cpu_share": self.cpu_share,
            "orders": self.opts.orders,
            "connect_retries": self.retries,
            "connect_refusals": self.refusals,
            "steps": [s.summary() for s in steps],
            "best": best.summary() if best else None,
            "peak": peak.summary() if peak else None,
        }


def failure(what: str, exc: Exception) -> dict[str, Any]:
    """A target's failure as its results record it (the other target's numbers stand)."""
    say(f"{what} failed: {exc}")
    return {"error": str(exc)[:2000]}


async def guarded(what: str, run: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """One target's failure is recorded in the results and must not hide the other target's numbers."""
    try:
        return await run
    except Exception as exc:
        return failure(what, exc)


async def scenario_l(opts: Options) -> dict[str, Any]:
    return await ladders_in_turn(opts, "L", opts.rates, with_redis=False)


Key = TypeVar("Key")


async def ladders_in_turn(
    opts: Options, label: str, rates: Sequence[int], with_redis: bool
) -> dict[str, Any]:
    """Both targets' one-process ladders at once, stepped in turn (ours, reference, then the
    reference first at the next rate, ...), so a minute in which the machine runs slower falls
    on both: run one after the other, a ladder's verdict has swung with the machine's speed alone.
    ``with_redis``: each target on a Redis of its own."""
    ladders = {t: Ladder(t, opts, label, 1) for t in opts.targets}
    out = await run_in_turn(ladders, {t: rates for t in ladders}, with_redis)
    return {t: out[t] for t in opts.targets}


async def run_in_turn(
    ladders: Mapping[Key, Ladder], rates: Mapping[Key, Sequence[int]], with_redis: bool
) -> dict[Key, dict[str, Any]]:
    """Start the ladders (each on a Redis of its own with ``with_redis``), warm each up for its
    first rate, step them in turn (``step_in_turn``) and stop them: each one's result, or its
    failure when it could not start."""
    out: dict[Key, dict[str, Any]] = {}
    async with contextlib.AsyncExitStack() as stack:
        started: dict[Key, Ladder] = {}
        for k, ladder in ladders.items():
            try:
                if with_redis:
                    ladder.redis = start_redis(ladder.opts, ladder.label, ladder.target)
                    stack.callback(ladder.redis.stop)
                started[k] = await stack.enter_async_context(ladder)
                await ladder.warm(rates[k][0])
            except Exception as exc:
                out[k] = failure(f"{ladder.label} {ladder.target}", exc)
        await step_in_turn(started, rates, out)
    return out


class Stepped(Protocol):
    """What ``step_in_turn`` needs of a ladder."""

    label: str
    target: str

    @property
    def done(self) -> bool: ...

    async def step(self, rate: int) -> Any: ...

    def result(self) -> dict[str, Any]: ...


async def step_in_turn(
    ladders: Mapping[Key, Stepped], rates: Mapping[Key, Sequence[int]], out: dict[Key, dict[str, Any]]
) -> None:
    """Step the ladders through their rates in turn, the order swapped at each step, until each is
    done (two steps missed in a row), out of rates or failed (its failure in ``out``); then each
    one's result into ``out``."""
    keys = [k for k in ladders if k not in out]
    for i in range(max((len(rates[k]) for k in keys), default=0)):
        running = [k for k in keys if k not in out and not ladders[k].done and i < len(rates[k])]
        if not running:
            break
        for k in running if i % 2 == 0 else running[::-1]:
            try:
                await ladders[k].step(rates[k][i])
            except Exception as exc:
                out[k] = failure(f"{ladders[k].label} {ladders[k].target}", exc)
    for k in keys:
        out.setdefault(k, ladders[k].result())


def start_redis(opts: Options, label: str, t: str) -> servers.Redis:
    """A Redis of its own for one target's run ``label``."""
    name = f"redis-{label}-{t}"
    return servers.start_redis(opts.run_dir / name, opts.run_dir / "logs", name)


async def scenario_x(opts: Options) -> dict[str, Any]:
    """X1 uncapped (also "L with Redis"; both targets stepped in turn, as in L); then capped
    pairs: 1 and 3 processes each held to ``cap_share`` of a core, stepped in turn, whose held
    rates give the scaling. Where no CPU cap can be set, 3 uncapped processes instead (their held
    rate is then the machine's)."""
    out: dict[str, Any] = {t: {} for t in opts.targets}
    for t, result in (await ladders_in_turn(opts, "X1", opts.x_rates, with_redis=True)).items():
        out[t]["1"] = result
    why_not = cpucap.unavailable() if opts.cap_share > 0 else "not asked for (--cap-share 0)"
    if why_not is not None:
        say(f"X capped: not run, {why_not}")
        out["capped"] = {"unavailable": why_not}

    for t in opts.targets:
        if why_not is not None:
            uncapped = {3: Ladder(t, opts, "X3", 3)}
            out[t]["3"] = (await run_in_turn(uncapped, {3: opts.x_rates}, with_redis=True))[3]
            continue
        one_rates = opts.cap_rates
        for i in range(max(1, opts.cap_pairs)):
            sfx = pair_suffix(i)
            one, three = await capped_pair_in_turn(opts, t, sfx, one_rates)
            out[t][f"1cap{sfx}"], out[t][f"3cap{sfx}"] = one, three
            one_rates = resume_ladder(opts.cap_rates, _g(one, "best", "rate"))
    return out


# The capped 3-process ladder steps at this multiple of the 1-process ladder's rate: X's target.
# Each turn then asks the target's question at one rate, and both ladders' knees fall close
# together in time when the scaling is near it.
THREE_TO_ONE: Final = 2.7


def three_ladder(one_rates: Sequence[int]) -> list[int]:
    """The capped 3-process ladder beside ``one_rates``: each step ``THREE_TO_ONE`` times as fast."""
    return [round(r * THREE_TO_ONE) for r in one_rates]


async def capped_pair_in_turn(
    opts: Options, t: str, sfx: str, one_rates: Sequence[int]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One capped pair: 1 and 3 processes (each on a Redis of its own, each process held to
    ``cap_share`` of a core) up at once and stepped in turn, so a slower minute of the machine
    falls on both sides of the ratio: run one after the other, the 1-process ladder held 2,480
    and then 3,898 deliveries/s on the same code."""
    rates = {1: list(one_rates), 3: three_ladder(one_rates)}
    ladders = {n: Ladder(t, opts, f"X{n}cap{sfx}", n, cpu_share=opts.cap_share) for n in (1, 3)}
    out = await run_in_turn(ladders, rates, with_redis=True)
    return out[1], out[3]


def pair_suffix(i: int) -> str:
    """The result keys' suffix of the i-th capped pair (0-based): "1cap", "1cap-2", ..."""
    return "" if i == 0 else f"-{i + 1}"


def resume_ladder(rates: list[int], held: float | None, below: int = 3) -> list[int]:
    """A later pair's 1-process ladder: from ``below`` steps under what the pair before held (the
    steps further down only cost time; one process held them already)."""
    if not held:
        return rates
    under = [r for r in rates if r <= held]
    return rates[max(0, len(under) - 1 - below) :]


# ---- C: idle authenticated connections -----------------------------------------------------------
async def scenario_c(opts: Options) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in opts.targets:
        out[t] = await guarded(f"C {t}", connections_run(t, opts))
    return out


async def connections_run(t: str, opts: Options) -> dict[str, Any]:
    traced = opts.profile_memory and t == "ours"
    procs = start_targets(t, opts, f"C-{t}", 1, None, traced=traced)
    spy = PySpy(procs[0].pid, opts.run_dir / "C-ours-pyspy.txt") if opts.profile and t == "ours" else None
    try:
        cfg = {
            "mode": "C",
            "secret": SECRET,
            "urls": [procs[0].url],
            "connections": opts.connections,
            "warmup": 200,
            "userPrefix": f"c-{t}",
            "serverPids": [procs[0].pid],
            # Many source addresses: a per-address connect limit should see a crowd of devices.
            "localAddresses": max(opts.local_addresses, opts.connections // 20),
            "connectConcurrency": 100,
            "settleMs": 3000,
        }
        gen = Loadgen(f"C-{t}-loadgen", cfg, opts.run_dir / "logs")
        say(f"C {t}: opening {opts.connections} idle authenticated sockets")
        try:
            res = await gen.start(wait_s=opts.connections / 50 + 120)
            if spy is not None:
                (opts.run_dir / "profile-C-ours.txt").write_text(spy.stop())
                say(f"C {t}: py-spy profile of the connects in {opts.run_dir / 'profile-C-ours.txt'}")
            if traced:
                report_path = opts.run_dir / f"C-{t}-tracemalloc.txt"
                await asyncio.to_thread(signal_dump, report_path)
                say(f"C {t}: tracemalloc report (sockets held) in {report_path}")
        finally:
            await gen.close()
        say(
            f"C {t}: {res['connected']} connected ({res['errors']} errors), "
            f"{fmt(res['bytesPerConnection'] / 1024)} KB/connection, {fmt(res['connectRate'])} connects/s"
        )
        return res
    finally:
        servers.stop_all(procs)


# ---- K: Kafka order.status_changed to subscribed customers ----------------------------------------
# The producer's batching window, as Kafka 4's default ``linger.ms`` of 5: a produce request per
# 2 ms tick cost the producer ~0.2 of a core here, nearly all in the socket write per request.
PRODUCE_TICK_S: Final = 0.005


class StatusProducer:
    """``order.status_changed`` for ``orders`` in turn, keyed by order id, from one producer that
    lives across K's warm-up and timed runs, as a backend's does: a producer started per run paid
    its connection setup and first requests inside the run's first 100-300 ms, which alone put
    113 and 464 events over K's target in two of twelve runs."""

    def __init__(self, bootstrap: str, topic: str, orders: Sequence[dict[str, str]]) -> None:
        from aiokafka import AIOKafkaProducer

        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
        self._topic = topic
        self._orders = orders
        self._targets: list[tuple[bytes, int, dict[str, str]]] = []

    async def __aenter__(self) -> StatusProducer:
        from aiokafka.partitioner import DefaultPartitioner
        from aiokafka.structs import TopicPartition

        producer = self._producer
        await producer.start()
        try:
            partitioner = DefaultPartitioner()
            partitions = sorted(await producer.partitions_for(self._topic))
            # Per order: key, partition (murmur2 is pure Python here) and the payload.
            self._targets = [
                (
                    key,
                    partitioner(key, partitions, partitions),
                    {"orderId": o["orderId"], "status": "in_transit"},
                )
                for o in self._orders
                for key in [o["orderId"].encode()]
            ]
            # The connections to the partitions' leaders open with the first send, not in ``start``.
            cluster = producer.client.cluster
            for leader in {cluster.leader_for_partition(TopicPartition(self._topic, p)) for p in partitions}:
                if not await producer.client.ready(leader):
                    raise RuntimeError(f"no connection to Kafka node {leader}")
        except BaseException:
            await producer.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def produce(self, rate: int, seconds: float) -> int:
        """``rate``/s for ``seconds``; returns the number sent, once the broker has them all.

        Each tick's records go out as one batch per partition (aiokafka's ``send_batch``): sending
        them one by one cost this process ~0.2 of a core at 5,000/s, taken from the gateway on a
        2-core machine. Event ids are unique per call."""
        producer, topic, targets = self._producer, self._topic, self._targets
        prefix = uuid.uuid4().hex[:12]
        sent = 0
        total = int(rate * seconds)
        start = time.monotonic()
        pending = []
        while sent < total:
            due = min(total, int(rate * (time.monotonic() - start)))
            batches: dict[int, Any] = {}
            while sent < due:
                key, part, payload = targets[sent % len(targets)]
                event_id = f"{prefix}-{sent}"
                value = orjson.dumps(
                    {
                        "eventId": event_id,
                        "type": "order.status_changed",
                        "occurredAt": datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
                        "correlationId": event_id,
                        "payload": payload,
                    }
                )
                batch = batches.get(part)
                if batch is None:
                    batch = batches[part] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it
                    pending.append(await producer.send_batch(batch, topic, partition=part))
                    batch = batches[part] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
                sent += 1
            for part, batch in batches.items():
                pending.append(await producer.send_batch(batch, topic, partition=part))
            await asyncio.sleep(PRODUCE_TICK_S)
        await asyncio.gather(*pending)
        return sent


async def kafka_floor(
    bootstrap: str, topic: str, orders: Sequence[dict[str, str]], rate: int, seconds: float
) -> dict[str, Any]:
    """K's load with a plain aiokafka consumer in place of the gateway: what the producer, the
    broker and a consumer cost on this machine before any gateway work (receive time minus occurredAt)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"floor-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="latest",
    )
    await consumer.start()
    hist = Histogram()
    expect = int(rate * seconds)
    received = 0

    async def consume() -> None:
        nonlocal received
        while received < expect:
            fetched = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for records in fetched.values():
                for r in records:
                    occurred = json.loads(r.value)["occurredAt"]
                    sent_at = datetime.fromisoformat(occurred.replace("Z", "+00:00")).timestamp()
                    ms = max(0, round((now - sent_at) * 1000))
                    hist.counts[ms] = hist.counts.get(ms, 0) + 1
                    received += 1

    try:
        while not consumer.assignment():  # the group is formed before anything is produced
            await consumer.getmany(timeout_ms=100)
        reader = asyncio.create_task(consume())
        async with StatusProducer(bootstrap, topic, orders) as producer:
            await producer.produce(rate, seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader, 30)
    finally:
        await consumer.stop()
    return {
        "received": received,
        "p50_ms": hist.percentile(50),
        "p95_ms": hist.percentile(95),
        "p99_ms": hist.percentile(99),
    }


async def create_topics(bootstrap: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from realtime_contract import DEFAULT_TOPICS

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(name, num_partitions=partitions, replication_factor=1)
                for name in DEFAULT_TOPICS.values()
            ]
        )
    finally:
        await admin.close()


# Seconds of unreported load at the full rate before K's timed run. A fresh broker compiles its hot
# paths for about a minute of load (its CPU here fell from about one core to about 0.3 of one at
# 5,000/s once warm), which on a 2-core machine it takes from the gateway, the producer and the
# clients: after 20 s, its JIT compiler still took 45-70 % of a core in bursts of 0.3-0.8 s in
# which every stage's latency rose at once (sampled per thread every 100 ms). A broker in service
# has long finished that.
K_WARM_SECONDS: Final = 60.0
# ... and, past that, until the broker's collector has done ZGC's warm-up cycles, which come at set
# heap levels, not times (about 110 s of load here), checked after each chunk of this many seconds;
# at most K_WARM_MAX_SECONDS.
K_WARM_CHUNK_SECONDS: Final = 10.0
K_WARM_MAX_SECONDS: Final = 180.0
# Timed runs of K (one with --quick); the report stands on the median p99 and lists each.
K_RUNS: Final = 3
# K's p99 target: each run also counts the events later than this per 100 ms window, to tell a
# tail spread over the run from one made in a few bursts.
K_TARGET_MS: Final = 25
# Windows of 100 ms that "a few bursts" means.
K_WORST_WINDOWS: Final = 3
# A wake-up of the stall probe (bench/probe.py) this late says the machine stalled.
K_STALL_MS: Final = 10.0
# Late events in a stall's 100 ms window or in this many windows after it count as following it.
K_STALL_LOOKBACK: Final = 3


async def start_probe(seconds: float) -> asyncio.subprocess.Process:
    """The stall probe for ``seconds``, returned once it watches (read its answer with
    ``read_probe``). A run starts only then: an interpreter starting beside a run's first 100 ms
    took CPU from it (34-82 late events in the first window of each of six timed runs)."""
    probe = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.probe",
        str(seconds),
        cwd=servers.REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert probe.stdout is not None
        first = await asyncio.wait_for(probe.stdout.readline(), 30)
        if "started" not in json.loads(first or b"{}"):
            raise RuntimeError(f"the stall probe did not start: {first!r}")
    except BaseException:
        probe.kill()
        await probe.wait()
        raise
    return probe


async def read_probe(probe: asyncio.subprocess.Process) -> dict[str, float]:
    """The probe's latest wake-up per 100 ms window (ms), once it has ended."""
    out, _ = await asyncio.wait_for(probe.communicate(), 30)
    if probe.returncode != 0:
        raise RuntimeError(f"the stall probe exited with {probe.returncode}")
    late: dict[str, float] = json.loads(out.splitlines()[-1])["late"]
    return late


async def scenario_k(opts: Options) -> dict[str, Any]:
    if "ours" not in opts.targets:
        return {}
    if servers.kafka_home() is None:
        return {"ours": {"status": "not available: Kafka jars not provisioned (bash tools/kafka.sh)"}}
    from realtime_contract import DEFAULT_TOPICS

    topic = DEFAULT_TOPICS["orderEvents"]
    out: dict[str, Any] = {
        "reference": {
            "status": "not available: no maintained pure-JS Kafka client speaks the Kafka 4 protocol "
            "(kafkajs stops at 2.x APIs; the librdkafka binding downloads a prebuilt binary)"
        }
    }
    redis = servers.start_redis(opts.run_dir / "redis-k", opts.run_dir / "logs", "redis-k")
    kafka = servers.start_kafka(opts.run_dir / "kafka", opts.run_dir / "logs")
    procs: list[servers.Server] = []
    gen: Loadgen | None = None
    producing = contextlib.AsyncExitStack()
    try:
        await create_topics(kafka.bootstrap, 6)
        try:
            procs = start_targets("ours", opts, "K", 1, redis.url, kafka.bootstrap)
        except (RuntimeError, TimeoutError) as exc:
            out["ours"] = {"status": f"not available: the gateway did not start with Kafka ({exc})"[:500]}
            return out
        orders = make_orders(200, "K")
        await authorize_orders(procs[0].url, orders)
        cfg = {
            "mode": "K",
            "secret": SECRET,
            "urls": [procs[0].url],
            "orders": orders,
            # socket.io-client: lean.js took 4 points of a core less here, but in three interleaved
            # pairs its runs were not faster (docs/benchmarks.md, seventeenth round).
            "client": "socket.io",
            "localAddresses": opts.local_addresses,
        }
        gen = Loadgen("K-ours-loadgen", cfg, opts.run_dir / "logs")
        await gen.start(wait_s=120)
        producer = await producing.enter_async_context(StatusProducer(kafka.bootstrap, topic, orders))
        # Warm-up: the consumer group must have its partitions before the timed run.
        warm_from = int(time.time() * 1000)
        await gen.start_collect({"expect": 50, "timeoutMs": 60000, "from": warm_from})
        await producer.produce(50, 1.0)
        warm = await gen.read(90)
        if warm["received"] < 50:
            out["ours"] = {
                "status": f"not available: only {warm['received']}/50 warm-up events reached clients"
            }
            return out
        # Then unreported load at the full rate, as L has: the broker's JIT and the consumer's
        # fetch sizes settle there, and so does the broker's collector, whose warm-up cycles come
        # at set heap levels (servers.start_kafka); the timed runs measure the steady state.
        warm_start = time.monotonic()
        while True:
            chunk_from = int(time.time() * 1000)
            chunk_n = int(opts.k_rate * K_WARM_CHUNK_SECONDS)
            await gen.start_collect({"expect": chunk_n, "timeoutMs": 60000, "from": chunk_from})
            await producer.produce(opts.k_rate, K_WARM_CHUNK_SECONDS)
            await gen.read(90)
            warm_s = time.monotonic() - warm_start
            gc_warm = broker_gc_warm(gc_cycles(kafka.gc_log_text()))
            if warm_s >= K_WARM_SECONDS and gc_warm:
                break
            if warm_s >= K_WARM_MAX_SECONDS:
                say(f"K ours: the broker's collector is not warm after {warm_s:.0f} s; timing anyway")
                break
        runs = 1 if opts.quick else K_RUNS
        say(f"K ours: consumer warm, producing {opts.k_rate}/s for {opts.k_seconds}s, {runs} time(s)")
        sides = (("broker", kafka.proc), ("redis", redis.proc))

        async def timed_run(n: int) -> dict[str, Any]:
            assert gen is not None
            expect = int(opts.k_rate * opts.k_seconds)
            start_ms = int(time.time() * 1000)
            cpu0 = servers.cpu_seconds(procs[0].pid)
            side0 = {name: servers.cpu_seconds(p.pid) for name, p in sides}
            await gen.start_collect(
                {
                    "expect": expect,
                    "timeoutMs": int(opts.k_seconds * 1000) + 10000,
                    "from": start_ms,
                    "overMs": K_TARGET_MS,
                }
            )
            profiled = opts.profile and n == 0
            spy = PySpy(procs[0].pid, opts.run_dir / "K-ours-pyspy.txt") if profiled else None
            probe = await start_probe(opts.k_seconds + 1)
            try:
                t0, own_cpu0 = time.monotonic(), time.process_time()
                sent = await producer.produce(opts.k_rate, opts.k_seconds)
                produce_s, producer_cpu = time.monotonic() - t0, time.process_time() - own_cpu0
                res = await gen.read(opts.k_seconds + 60)
                broker_gcs = cycles_within(gc_cycles(kafka.gc_log_text()), start_ms / 1000, time.time())
                probe_late = await read_probe(probe)
            finally:
                if probe.returncode is None:  # the run failed: its probe has nothing to tell
                    probe.kill()
                    await probe.wait()
            # Per 100 ms window, for a look at where a run's late events came from: the late events,
            # the clients' garbage collections (ms) and the probe's late wake-ups (ms).
            windows = {
                "startMs": start_ms,
                "over": res["overByWindow"],
                "clientGc": res["gcByWindow"],
                "probe": probe_late,
            }
            (opts.run_dir / f"K-windows-{n + 1}.json").write_text(json.dumps(windows))
            client_gc_max = max(res["gcByWindow"].values(), default=0.0)
            if spy is not None:
                (opts.run_dir / "profile-K-ours.txt").write_text(spy.stop())
                say(f"K ours: py-spy profile in {opts.run_dir / 'profile-K-ours.txt'}")
            cpu = servers.cpu_seconds(procs[0].pid) - cpu0
            side = {
                name: round(100 * (servers.cpu_seconds(p.pid) - side0[name]) / produce_s, 1)
                for name, p in sides
            }
            hist = Histogram.from_json(res["hist"])
            over, clustered = late_clustering(res["overByWindow"], K_WORST_WINDOWS)
            stalls, after = after_stalls(res["overByWindow"], probe_late, K_STALL_MS, K_STALL_LOOKBACK)
            say(
                f"K ours run {n + 1}: {res['received']}/{sent} delivered, p50 {fmt(hist.percentile(50))} "
                f"p95 {fmt(hist.percentile(95))} p99 {fmt(hist.percentile(99))} ms; "
                f"{over} over {K_TARGET_MS} ms, {fmt_percent(clustered)} % "
                f"of them in the {K_WORST_WINDOWS} worst 100 ms windows, {fmt_percent(after)} % "
                f"within {K_STALL_LOOKBACK * 100} ms after one of the {stalls} windows the probe stalled "
                f"{K_STALL_MS:g} ms+; clients' GC at most {fmt(client_gc_max)} ms per 100 ms; "
                f"{len(broker_gcs)} broker GC cycle(s) during it"
            )
            return {
                "status": "ok",
                "rate": opts.k_rate,
                "produced": sent,
                "produce_seconds": round(produce_s, 3),
                "received": res["received"],
                "loss": max(0, sent - res["received"]) / sent if sent else 0.0,
                "p50_ms": hist.percentile(50),
                "p95_ms": hist.percentile(95),
                "p99_ms": hist.percentile(99),
                "max_ms": float(max(hist.counts)) if hist.counts else None,
                "over_target": over,
                "over_in_worst_windows": clustered,
                "probe_stalls": stalls,
                "probe_max_late_ms": max(probe_late.values(), default=0.0),
                "over_after_stalls": after,
                "client_gc_max_ms": round(client_gc_max, 1),
                "broker_gc_cycles": len(broker_gcs),
                "server_cpu_pct": round(100 * cpu / produce_s, 1),
                "loadgen_cpu_pct": round(100 * res["cpuMs"] / 1000 / produce_s, 1),
                "producer_cpu_pct": round(100 * producer_cpu / produce_s, 1),
                "broker_cpu_pct": side["broker"],
                "redis_cpu_pct": side["redis"],
            }

        # This process is K's producer; what it holds from the warm-up and earlier scenarios is
        # kept out of its collector's full passes, which took 14-31 ms in K's runs otherwise
        # (events stamped before such a pause wait it out before they are sent).
        gc.collect()
        gc.freeze()
        try:
            done = [await timed_run(n) for n in range(runs)]
        finally:
            gc.unfreeze()
        # The run with the median p99 stands for the scenario (the worst loss of any run with it);
        # on two shared cores one 10 s run's tail swings by a factor of three.
        by_p99 = sorted(done, key=lambda r: r["p99_ms"] if r["p99_ms"] is not None else float("inf"))
        out["ours"] = {
            **by_p99[len(by_p99) // 2],
            "loss": max(r["loss"] for r in done),
            "runs": [
                {
                    k: r[k]
                    for k in (
                        "p50_ms",
                        "p95_ms",
                        "p99_ms",
                        "loss",
                        "server_cpu_pct",
                        "over_target",
                        "over_in_worst_windows",
                        "probe_stalls",
                        "probe_max_late_ms",
                        "over_after_stalls",
                        "client_gc_max_ms",
                        "broker_gc_cycles",
                    )
                }
                for r in done
            ],
        }
        # The same load without the gateway, once its processes are gone.
        await producing.aclose()
        await gen.close()
        gen = None
        servers.stop_all(procs)
        procs = []
        floor = out["kafka_floor"] = await kafka_floor(
            kafka.bootstrap, topic, orders, opts.k_rate, opts.k_seconds
        )
        say(f"K Kafka alone: p50 {fmt(floor['p50_ms'])} p99 {fmt(floor['p99_ms'])} ms")
    finally:
        await producing.aclose()
        if gen is not None:
            await gen.close()
        servers.stop_all(procs)
        kafka.stop()
        redis.stop()
    return out


SCENARIOS: dict[str, Callable[[Options], Any]] = {
    "L": scenario_l,
    "C": scenario_c,
    "X": scenario_x,
    "K": scenario_k,
}


# ---- the report ------------------------------------------------------------------------------
def _g(d: Any, *path: str) -> Any:
    """``d[path[0]][path[1]]…``; a digit string indexes a list; None where anything is missing."""
    for p in path:
        if isinstance(d, list) and p.isdigit() and int(p) < len(d):
            d = d[int(p)]
        elif isinstance(d, dict) and p in d:
            d = d[p]
        else:
            return None
    return d


def _ratio_row(name: str, ours: float | None, ref: float | None, digits: int = 1) -> list[str]:
    r = ours / ref if ours is not None and ref else None
    return [name, fmt(ours, digits), fmt(ref, digits), fmt(r, 2)]


def _held(step: dict[str, Any]) -> bool:
    p99 = step.get("p99_ms")
    return step.get("loss") == 0 and p99 is not None and p99 <= P99_LIMIT_MS


def _cpu_at_common_rate(a: Any, b: Any) -> tuple[float, float | None, float | None] | None:
    """(rate, a's and b's server µs per delivery) at the highest rate both runs held: CPU per
    delivery falls with rate (fixed costs spread), so it compares fairly only at one rate."""
    b_steps = {st["rate"]: st for st in b or [] if isinstance(st, dict)}
    found = None
    for st in a or []:
        other = b_steps.get(st.get("rate"))
        if other is not None and _held(st) and _held(other):
            found = (st["rate"], st.get("server_us_per_delivery"), other.get("server_us_per_delivery"))
    return found


@dataclass
class CappedPair:
    """One capped pair's held deliveries/s with 1 and 3 processes; ``topped``: three processes
    held the last step of their ladder, so the ratio is a lower bound."""

    one: float | None
    three: float | None
    topped: bool

    @property
    def ratio(self) -> float | None:
        return self.three / self.one if self.one and self.three is not None else None

    def text(self) -> str:
        ratio = fmt(self.ratio, 2)
        return "≥ " + ratio if self.topped and ratio != "n/a" else ratio


def capped_pairs(x_res: dict[str, Any], t: str) -> list[CappedPair]:
    """Target ``t``'s capped pairs in the order they ran."""
    pairs: list[CappedPair] = []
    while True:
        sfx = pair_suffix(len(pairs))
        one, three = _g(x_res, t, f"1cap{sfx}"), _g(x_res, t, f"3cap{sfx}")
        if one is None and three is None:
            return pairs
        steps = _g(three, "steps") or []
        topped = bool(steps) and _g(three, "best", "rate") == steps[-1].get("rate")
        pairs.append(
            CappedPair(_g(one, "best", "deliveries_per_s"), _g(three, "best", "deliveries_per_s"), topped)
        )


def median_pair(pairs: list[CappedPair]) -> CappedPair | None:
    """The pair with the median ratio (the lower of the middle two for an even count); a pair
    without a ratio (a failed run) only when no pair has one. One pair's ratio swung 2.2 to 4.4
    across four runs of the same code: the machine's speed moves between the two ladders."""
    measured = sorted((p for p in pairs if p.ratio is not None), key=lambda p: p.ratio or 0.0)
    if measured:
        return measured[(len(measured) - 1) // 2]
    return pairs[0] if pairs else None


def _capped_scaling(
    x_res: dict[str, Any],
) -> tuple[float, dict[str, CappedPair | None], dict[str, list[CappedPair]]] | None:
    """(share, the median pair by target, every pair by target) of the CPU-capped X runs, or None
    when none ran."""
    shares = [_g(x_res, t, f"{n}cap", "cpu_share") for t in TARGETS for n in (1, 3)]
    share = next((s for s in shares if s is not None), None)
    if share is None:
        return None
    pairs = {t: capped_pairs(x_res, t) for t in TARGETS}
    return float(share), {t: median_pair(pairs[t]) for t in TARGETS}, pairs


def report(results: dict[str, Any]) -> str:
    rows: list[list[str]] = []
    l_res = results.get("L")
    if l_res:
        for key, label in (("rate", "updates/s"), ("deliveries_per_s", "deliveries/s")):
            rows.append(
                _ratio_row(
                    f"L embedded: max held {label} (p99<=100ms, no loss)",
                    _g(l_res, "ours", "best", key),
                    _g(l_res, "reference", "best", key),
                )
            )
        for p in ("p50_ms", "p95_ms", "p99_ms"):
            rows.append(
                [
                    f"L embedded: {p[:-3]} ms at that rate",
                    fmt(_g(l_res, "ours", "best", p)),
                    fmt(_g(l_res, "reference", "best", p)),
                    "",
                ]
            )
        rows.append(
            _ratio_row(
                "L embedded: peak deliveries/s (any step)",
                _g(l_res, "ours", "peak", "deliveries_per_s"),
                _g(l_res, "reference", "peak", "deliveries_per_s"),
            )
        )
        rows.append(
            _ratio_row(
                "L embedded: server CPU us per delivery, first step (lower is better)",
                _g(l_res, "ours", "steps", "0", "server_us_per_delivery"),
                _g(l_res, "reference", "steps", "0", "server_us_per_delivery"),
            )
        )
        common = _cpu_at_common_rate(_g(l_res, "ours", "steps"), _g(l_res, "reference", "steps"))
        if common is not None:
            rows.append(
                _ratio_row(
                    f"L embedded: server CPU us per delivery at {fmt(common[0])}/s (highest both held)",
                    common[1],
                    common[2],
                )
            )
        rows.append(
            [
                "L embedded: server CPU % at max held",
                fmt(_g(l_res, "ours", "best", "server_cpu_pct")),
                fmt(_g(l_res, "reference", "best", "server_cpu_pct")),
                "",
            ]
        )
    c_res = results.get("C")
    if c_res:
        ours_kb = _g(c_res, "ours", "bytesPerConnection")
        ref_kb = _g(c_res, "reference", "bytesPerConnection")
        rows.append(
            [
                f"C: KB RSS per idle connection (at {fmt(_g(c_res, 'ours', 'connected'))} / "
                f"{fmt(_g(c_res, 'reference', 'connected'))})",
                fmt(ours_kb / 1024 if ours_kb is not None else None),
                fmt(ref_kb / 1024 if ref_kb is not None else None),
                fmt(ours_kb / ref_kb if ours_kb is not None and ref_kb else None, 2),
            ]
        )
        rows.append(
            _ratio_row(
                "C: connects/s", _g(c_res, "ours", "connectRate"), _g(c_res, "reference", "connectRate")
            )
        )
    x_res = results.get("X")
    if x_res:
        uncapped = [n for n in ("1", "3") if any(_g(x_res, t, n) is not None for t in TARGETS)]
        for n in uncapped:
            rows.append(
                _ratio_row(
                    f"X redis, {n} process(es): max held deliveries/s",
                    _g(x_res, "ours", n, "best", "deliveries_per_s"),
                    _g(x_res, "reference", n, "best", "deliveries_per_s"),
                )
            )
        if "3" in uncapped:
            # No CPU caps here: held throughput cannot grow past the machine's free cores.
            scal: dict[str, float | None] = {}
            for t in TARGETS:
                one = _g(x_res, t, "1", "best", "deliveries_per_s")
                three = _g(x_res, t, "3", "best", "deliveries_per_s")
                scal[t] = three / one if one and three is not None else None
            rows.append(
                ["X: scaling 3 vs 1 process (uncapped)", fmt(scal["ours"], 2), fmt(scal["reference"], 2), ""]
            )
        capped = _capped_scaling(x_res)
        if capped is not None:
            share, median, pairs = capped
            count = max(len(p) for p in pairs.values())
            which = f" (median of {count} pairs)" if count > 1 else ""
            for procs, held in ((1, "one"), (3, "three")):
                rows.append(
                    _ratio_row(
                        f"X capped at {fmt(share, 2)} core per process, {procs} process(es): "
                        f"max held deliveries/s{which}",
                        getattr(median["ours"], held, None),
                        getattr(median["reference"], held, None),
                    )
                )
            rows.append(
                [
                    f"X: scaling 3 vs 1, each process capped at {fmt(share, 2)} core{which}",
                    median["ours"].text() if median["ours"] else "n/a",
                    median["reference"].text() if median["reference"] else "n/a",
                    "",
                ]
            )
            if count > 1:
                rows.append(
                    [
                        "X: scaling of each capped pair, in run order",
                        ", ".join(p.text() for p in pairs["ours"]) or "n/a",
                        ", ".join(p.text() for p in pairs["reference"]) or "n/a",
                        "",
                    ]
                )
        common = _cpu_at_common_rate(_g(x_res, "ours", "1", "steps"), _g(x_res, "reference", "1", "steps"))
        if common is not None:
            rows.append(
                _ratio_row(
                    f"X redis, 1 process: server CPU us per delivery at {fmt(common[0])}/s (both held)",
                    common[1],
                    common[2],
                )
            )
        rows.append(
            _ratio_row(
                "X redis, 1 process: server CPU us per delivery, first step",
                _g(x_res, "ours", "1", "steps", "0", "server_us_per_delivery"),
                _g(x_res, "reference", "1", "steps", "0", "server_us_per_delivery"),
            )
        )
    k_res = results.get("K")
    if k_res:
        ours = k_res.get("ours", {})
        if ours.get("status") == "ok":
            for p in ("p50_ms", "p95_ms", "p99_ms"):
                rows.append([f"K: {p[:-3]} ms at {ours['rate']}/s (Kafka->client)", fmt(ours[p]), "n/a", ""])
            runs = ours.get("runs") or []
            if len(runs) > 1:
                rows.append(
                    [
                        f"K: p50 / p99 ms of each of {len(runs)} runs (above: the median-p99 run)",
                        ", ".join(f"{fmt(r['p50_ms'])} / {fmt(r['p99_ms'])}" for r in runs),
                        "",
                        "",
                    ]
                )
            if runs and all(r.get("over_target") is not None for r in runs):
                rows.append(
                    [
                        f"K: events over {K_TARGET_MS} ms per run / % of them in its "
                        f"{K_WORST_WINDOWS} worst 100 ms windows",
                        ", ".join(
                            f"{r['over_target']} / {fmt_percent(r['over_in_worst_windows'], 0)}" for r in runs
                        ),
                        "",
                        "",
                    ]
                )
            if runs and all(r.get("probe_stalls") is not None for r in runs):
                rows.append(
                    [
                        f"K: probe stalls of {K_STALL_MS:g} ms+ per run (longest ms) / % of the late events "
                        f"within {K_STALL_LOOKBACK * 100} ms after one / clients' GC ms per 100 ms at most",
                        ", ".join(
                            f"{r['probe_stalls']} ({fmt(r['probe_max_late_ms'], 0)}) / "
                            f"{fmt_percent(r['over_after_stalls'], 0)} / {fmt(r.get('client_gc_max_ms'))}"
                            for r in runs
                        ),
                        "",
                        "",
                    ]
                )
            if runs and all(r.get("broker_gc_cycles") is not None for r in runs):
                rows.append(
                    [
                        "K: the broker's GC cycles during each run",
                        ", ".join(str(r["broker_gc_cycles"]) for r in runs),
                        "",
                        "",
                    ]
                )
            rows.append(
                [f"K: share not delivered within 10 s at {ours['rate']}/s", fmt(ours["loss"], 4), "n/a", ""]
            )
            rows.append(
                [
                    "K: CPU % of one core: gateway / producer / broker / Redis / clients",
                    " / ".join(
                        fmt(ours.get(k))
                        for k in (
                            "server_cpu_pct",
                            "producer_cpu_pct",
                            "broker_cpu_pct",
                            "redis_cpu_pct",
                            "loadgen_cpu_pct",
                        )
                    ),
                    "",
                    "",
                ]
            )
            floor = k_res.get("kafka_floor")
            if floor:
                rows.append(
                    [
                        "K: Kafka alone (plain consumer) p50 / p99 ms",
                        f"{fmt(floor['p50_ms'])} / {fmt(floor['p99_ms'])}",
                        "",
                        "",
                    ]
                )
        else:
            rows.append(["K: Kafka->client", str(ours.get("status", "n/a"))[:60], "n/a", ""])
    cpu = loadgen_cpu_max(results)
    rows.append(["load generator: max CPU % of one core in any step", fmt(cpu), "", ""])
    return table(["metric", "ours", "reference", "ours/ref"], rows)


def loadgen_cpu_max(results: dict[str, Any]) -> float | None:
    values: list[float] = []

    def walk(d: Any) -> None:
        if isinstance(d, dict):
            v = d.get("loadgen_cpu_pct")
            if isinstance(v, int | float):
                values.append(float(v))
            for x in d.values():
                walk(x)
        elif isinstance(d, list):
            for x in d:
                walk(x)

    walk(results)
    return max(values) if values else None


def steps_table(results: dict[str, Any]) -> str:
    """Every L/X step of every run, for the record beside the summary."""
    runs: list[tuple[str, Any]] = []
    for t, run in (results.get("L") or {}).items():
        runs.append((f"L {t}", run))
    for t, by_n in (results.get("X") or {}).items():
        if isinstance(by_n, dict):
            for n, run in by_n.items():
                runs.append((f"X{n} {t}", run))
    rows: list[list[str]] = []
    for name, run in runs:
        for st in (run or {}).get("steps", []) if isinstance(run, dict) else []:
            rows.append(
                [
                    name,
                    fmt(st["rate"]),
                    fmt(st["deliveries_per_s"]),
                    fmt(st["p50_ms"]),
                    fmt(st["p95_ms"]),
                    fmt(st["p99_ms"]),
                    f"{st['loss']:.4f}",
                    fmt(st["server_cpu_pct"]),
                    fmt(st.get("server_us_per_delivery")),
                    fmt(st.get("redis_cpu_pct")),
                    fmt(st["loadgen_cpu_pct"]),
                    fmt(st.get("throttled_s"), 2) if "throttled_s" in st else "",
                ]
            )
    if not rows:
        return ""
    headers = ["run", "upd/s", "deliv/s", "p50", "p95", "p99", "loss"]
    headers += ["srv cpu%", "us/deliv", "redis%", "gen cpu%", "throttled s"]
    return table(headers, rows)
