"""Processes the benchmark runs: our gateway, the Node reference, Redis and a Kafka broker.

Each is a child process on 127.0.0.1 with its output in a log file under the run directory,
stopped with SIGTERM (then SIGKILL) at the end of its scenario.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO / "bench" / "reference"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cache_dir() -> Path:
    return Path(os.environ.get("RTG_CACHE_DIR", str(Path.home() / ".cache" / "realtime-gateway")))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
        return True
    return False


def http_ok(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
        return 200 <= int(resp.status) < 300
    return False


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, from /proc (fields 14 and 15 of stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Proc:
    """A child process in its own session, with its output in ``log_dir/name.log``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            list(argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return int(self.popen.pid)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return f"--- last lines of {self.log_path} ---\n" + "\n".join(text[-lines:])

    def wait_ready(self, probe: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{what}: exited with {self.popen.returncode}\n{self.tail()}")
            if probe():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{what}: not ready after {timeout}s\n{self.tail()}")

    def terminate(self) -> None:
        """SIGTERM without waiting (``stop`` then waits): lets several processes drain at once."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            self.terminate()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        self._log.close()


class Server:
    """A Socket.IO server under test (one process of ours or of the reference)."""

    def __init__(self, proc: Proc, port: int) -> None:
        self.proc = proc
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.stop()


def stop_all(procs: Sequence[Server]) -> None:
    for p in procs:
        p.proc.terminate()
    for p in procs:
        p.stop()


def start_ours(
    name: str,
    log_dir: Path,
    *,
    secret: str,
    api_key: str,
    extra_env: Mapping[str, str] | None = None,
    module: str = "realtime_gateway",
) -> Server:
    """``python -m realtime_gateway serve`` (or a wrapper module, for profiling) on a free port."""
    port = free_port()
    env = {
        "RTG_HOST": HOST,
        "RTG_PORT": str(port),
        "RTG_JWT_SECRET": secret,
        "RTG_API_KEY": api_key,
        "RTG_LOG_LEVEL": "warning",
        "RTG_INSTANCE_ID": name,
        "RTG_MAX_CONNECTIONS": "100000",
        # Draining sockets on SIGTERM is not what is measured here; keep teardown short.
        "RTG_DRAIN_SECONDS": "1",
        **(extra_env or {}),
    }
    proc = Proc(name, [sys.executable, "-m", module, "serve"], log_dir, env=env, cwd=REPO)
    server = Server(proc, port)
    proc.wait_ready(lambda: http_ok(f"{server.url}/readyz"), 60, f"gateway {name}")
    return server


def start_reference(
    name: str,
    log_dir: Path,
    *,
    secret: str,
    api_key: str,
    redis_url: str | None = None,
) -> Server:
    """The Node socket.io reference (bench/reference/server.js) on a free port."""
    port = free_port()
    env = {"RTG_HOST": HOST, "RTG_PORT": str(port), "RTG_JWT_SECRET": secret, "RTG_API_KEY": api_key}
    if redis_url:
        env["RTG_REDIS_URL"] = redis_url
    node = shutil.which("node") or "node"
    # e.g. BENCH_REFERENCE_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" to profile the reference
    extra = os.environ.get("BENCH_REFERENCE_NODE_ARGS", "").split()
    proc = Proc(name, [node, *extra, str(REFERENCE_DIR / "server.js")], log_dir, env=env, cwd=REFERENCE_DIR)
    server = Server(proc, port)
    proc.wait_ready(lambda: http_ok(f"{server.url}/healthz"), 30, f"reference {name}")
    return server


class Redis:
    def __init__(self, proc: Proc, port: int) -> None:
        self.proc = proc
        self.port = port

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def stop(self) -> None:
        self.proc.stop()


def start_redis(workdir: Path, log_dir: Path, name: str = "redis") -> Redis:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: run `bash tools/redis.sh` (Debian redis-server >= 7)")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        "--bind",
        HOST,
        "--port",
        str(port),
        "--dir",
        str(workdir),
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    proc = Proc(name, argv, log_dir)
    proc.wait_ready(lambda: port_open(port), 20, "redis-server")
    return Redis(proc, port)


class Kafka:
    def __init__(self, proc: Proc, port: int, gc_log: Path) -> None:
        self.proc = proc
        self.port = port
        # The broker's collections (``-Xlog:gc,gc+phases``), for ``bench.stats.gc_cycles``.
        self.gc_log = gc_log

    def gc_log_text(self) -> str:
        return self.gc_log.read_text() if self.gc_log.exists() else ""

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def stop(self) -> None:
        self.proc.stop(timeout=30)


def pinned_versions() -> dict[str, str]:
    """tools/versions.env, the single source of the server versions."""
    out: dict[str, str] = {}
    for line in (REPO / "tools" / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def kafka_home() -> Path | None:
    home = cache_dir() / f"kafka-{pinned_versions()['KAFKA_VERSION']}"
    return home if (home / ".complete").exists() else None


def start_kafka(workdir: Path, log_dir: Path, partitions: int = 6) -> Kafka:
    """A single combined broker+controller in KRaft mode from the jars tools/kafka.sh caches."""
    home = kafka_home()
    if home is None:
        raise RuntimeError("Kafka jars are not provisioned: run `bash tools/kafka.sh`")
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java not found: apt-get install openjdk-17-jre-headless")
    port, cport = free_port(), free_port()
    data = workdir / "kafka-data"
    data.mkdir(parents=True, exist_ok=True)
    props = workdir / "server.properties"
    props.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{HOST}:{cport}",
                f"listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{cport}",
                f"advertised.listeners=PLAINTEXT://{HOST}:{port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={data}",
                f"num.partitions={partitions}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                "",
            ]
        )
    )
    cp = f"{home}/libs/*"
    log4j = f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}"
    # Kafka's Uuid text form. One starting with "-" would be read by the storage tool as an
    # option (as Kafka's own ``random-uuid`` does, draw again).
    cluster_id = "-"
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    subprocess.run(
        [java, log4j, "-cp", cp, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    # ZGC, not G1: on two cores shared with the gateway, Redis and the clients, G1's young pauses
    # took 6-28 ms every 4 s, and most of K's 100 ms windows with late events began within 100 ms
    # of one; ZGC's pauses stay under a millisecond. A ZGC cycle still takes about a core for
    # 150-200 ms, though, and with Kafka's start-script heap (1 GB) one ran every 11-25 s at
    # 5,000 events/s; some of K's bursts of late events ended with one. So the heap is the 6 GB
    # of the production tuning in Kafka's documentation (operations, "Java Version"): at K's
    # allocation rate (about 30 MB/s) that leaves minutes between cycles once ZGC's three warm-up
    # cycles (at 10, 20 and 30 % of the heap) are done. Proactive cycles, which keep a heap's use
    # low while it has room, are off. ZGC commits the whole heap at start: 6 GB of this machine's
    # 24. A broker on machines of its own would keep its collector off the gateway's cores. K
    # waits for the warm-up cycles and reports the cycles that overlapped each timed run, from
    # the GC log beside the broker's own.
    gc_log = log_dir / "kafka-gc.log"
    argv = [
        java,
        "-Xms6g",
        "-Xmx6g",
        "-XX:+UseZGC",
        "-XX:-ZProactive",
        f"-Xlog:gc,gc+phases:file={gc_log}:time,uptime",
        log4j,
        "-cp",
        cp,
        "kafka.Kafka",
        str(props),
    ]
    proc = Proc("kafka", argv, log_dir)
    proc.wait_ready(lambda: port_open(port), 90, "kafka broker")
    return Kafka(proc, port, gc_log)
