# redis-py's cluster API carries no annotations.
# mypy: disable-error-code="no-untyped-call"
"""Real Redis servers for tests: a standalone ``redis-server`` and a 3-master Redis Cluster.

Both run Debian's ``redis-server`` (installed by ``bash tools/redis.sh``) on free loopback ports,
with their data and logs in a directory the caller owns (a pytest tmp dir).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from tests.support.procs import ManagedProcess, free_port, wait_until

HOST = "127.0.0.1"
START_TIMEOUT = 20.0
CLUSTER_TIMEOUT = 30.0


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} not found on PATH: run `bash tools/redis.sh` (Debian redis-server >= 7.0)"
        )
    return path


class RedisServer:
    """One ``redis-server`` process; ``restart()`` keeps its port and its data."""

    def __init__(
        self,
        workdir: Path,
        *,
        name: str = "redis",
        port: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.host = HOST
        self.port = port or free_port(HOST)
        self.extra_args = list(extra_args)
        self.proc: ManagedProcess | None = None
        # Ports may be re-picked only before the first start; after that restarts keep them.
        self._ports_fixed = port is not None
        self.workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def argv(self) -> list[str]:
        return [
            _binary("redis-server"),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--dir",
            str(self.workdir),
            "--daemonize",
            "no",
            "--logfile",
            "",
            # A save point makes SIGTERM (stop/restart) write dump.rdb, so data survives a restart;
            # SIGKILL (kill) loses whatever was not saved, as a crash would.
            "--save",
            "3600 1",
            "--appendonly",
            "no",
            *self.extra_args,
        ]

    def client(self, *, decode_responses: bool = False) -> redis.Redis:
        return redis.Redis(
            host=self.host, port=self.port, socket_timeout=5, decode_responses=decode_responses
        )

    def ping(self) -> bool:
        with redis.Redis(host=self.host, port=self.port, socket_timeout=1, socket_connect_timeout=1) as r:
            return bool(r.ping())

    def start(self) -> RedisServer:
        if self.proc is not None and self.proc.alive():
            raise RuntimeError(f"{self.name} on port {self.port} is already running")
        attempts = 1 if self._ports_fixed else 3
        for attempt in range(1, attempts + 1):
            self.proc = ManagedProcess(self.name, self.argv(), self.workdir, cwd=self.workdir)
            try:
                wait_until(
                    self.ping, timeout=START_TIMEOUT, what=f"{self.name} PING on {self.port}", proc=self.proc
                )
                break
            except RuntimeError:
                # A free port can be taken by another process between picking and binding.
                lost_race = "Address already in use" in self.proc.tail()
                self.stop()
                if not lost_race or attempt == attempts:
                    raise
                self._repick_ports()
        self._ports_fixed = True
        return self

    def _repick_ports(self) -> None:
        self.port = free_port(HOST)
        if "--cluster-port" in self.extra_args:
            i = self.extra_args.index("--cluster-port") + 1
            self.extra_args[i] = str(free_port(HOST))

    def stop(self) -> None:
        """Graceful stop (SIGTERM: the server saves its data first)."""
        if self.proc is not None:
            self.proc.stop(timeout=15)
            self.proc = None

    def kill(self) -> None:
        """Crash the server (SIGKILL), for fault-injection tests; ``start()`` brings it back."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.stop()
            self.proc = None

    def restart(self) -> RedisServer:
        """Stop and start again on the same port with the same data directory."""
        self.stop()
        return self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisCluster:
    """Three ``--cluster-enabled`` masters joined by ``redis-cli --cluster create``, no replicas."""

    def __init__(self, workdir: Path, *, masters: int = 3) -> None:
        self.workdir = workdir
        self.start_seconds = 0.0
        self.nodes: list[RedisServer] = []
        for i in range(masters):
            node_dir = workdir / f"node{i}"
            # The cluster bus needs a port of its own; by default it is port+10000, which may be
            # taken or beyond 65535, so each node gets an explicit free one.
            bus_port = free_port(HOST)
            self.nodes.append(
                RedisServer(
                    node_dir,
                    name=f"redis-cluster-{i}",
                    extra_args=[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(node_dir / "nodes.conf"),
                        "--cluster-node-timeout",
                        "5000",
                        "--cluster-port",
                        str(bus_port),
                    ],
                )
            )

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(n.host, n.port) for n in self.nodes]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def client(self, *, decode_responses: bool = False) -> redis.RedisCluster:
        nodes = [redis.cluster.ClusterNode(h, p) for h, p in self.startup_nodes]
        return redis.RedisCluster(startup_nodes=nodes, socket_timeout=5, decode_responses=decode_responses)

    def flushall(self) -> None:
        """Empty every master (the session cluster is shared; keys live on the slot's owner)."""
        for node in self.nodes:
            with node.client() as r:
                r.flushall()

    def _cluster_ok(self) -> bool:
        for node in self.nodes:
            with node.client() as r:
                info = r.execute_command("CLUSTER INFO")
                # redis-py parses CLUSTER INFO into a dict; tolerate the raw text form too.
                if isinstance(info, bytes | str):
                    text = info.decode() if isinstance(info, bytes) else info
                    info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
                fields = {str(k): str(v).strip() for k, v in dict(info).items()}
                if fields.get("cluster_state") != "ok":
                    return False
                if int(fields.get("cluster_known_nodes", "0")) != len(self.nodes):
                    return False
        return True

    def start(self) -> RedisCluster:
        started = time.monotonic()
        try:
            for node in self.nodes:
                node.start()
            create = subprocess.run(
                [
                    _binary("redis-cli"),
                    "--cluster",
                    "create",
                    *(f"{h}:{p}" for h, p in self.startup_nodes),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=CLUSTER_TIMEOUT,
                check=False,
            )
            (self.workdir / "cluster-create.log").write_text(create.stdout + create.stderr)
            if create.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{create.stdout}\n{create.stderr}")
            wait_until(self._cluster_ok, timeout=CLUSTER_TIMEOUT, what="cluster_state:ok on every node")
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
