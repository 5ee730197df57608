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

from tests.support.procs import ServerProcess, free_port, wait_until

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


class RedisServer(ServerProcess):
    """One ``redis-server`` process; ``restart()`` keeps its port and its data."""

    start_timeout = START_TIMEOUT
    readiness = "PING"

    def __init__(
        self,
        workdir: Path,
        *,
        name: str = "redis",
        port: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(workdir, name=name, ports_fixed=port is not None)
        self.host = HOST
        self.port = port or free_port(HOST)
        self.extra_args = list(extra_args)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

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

    def ready(self) -> bool:
        return self.ping()

    def repick_ports(self) -> None:
        self.port = free_port(HOST)
        if "--cluster-port" in self.extra_args:
            i = self.extra_args.index("--cluster-port") + 1
            self.extra_args[i] = str(free_port(HOST))


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
