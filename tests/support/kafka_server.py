"""A real Apache Kafka broker for tests: KRaft, one process acting as broker and controller.

The jars come from Maven Central via ``bash tools/kafka.sh`` (cached in
``$RTG_CACHE_DIR/kafka-$KAFKA_VERSION``); the broker runs on the machine's Java with free
loopback ports and a log directory the caller owns. Storage is formatted with a fresh cluster
id on first start only, so ``restart()`` keeps topics, offsets and committed group offsets.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import shutil
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient

from tests.support.procs import ManagedProcess, ServerProcess, free_port, port_open
from tests.support.versions import CACHE_DIR, VERSIONS

HOST = "127.0.0.1"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
PROVISION_HINT = "run `bash tools/kafka.sh` (needs java >= 17 and mvn)"

T = TypeVar("T")


def kafka_home() -> Path:
    """The provisioned Kafka directory; fails naming the provisioning command if it is missing."""
    if shutil.which("java") is None:
        raise RuntimeError(f"java not found on PATH: {PROVISION_HINT}")
    version = VERSIONS["KAFKA_VERSION"]
    home = CACHE_DIR / f"kafka-{version}"
    if not (home / ".complete").is_file() or not any((home / "libs").glob("kafka_*.jar")):
        raise RuntimeError(f"Kafka {version} jars are not provisioned in {home}: {PROVISION_HINT}")
    return home


def _random_cluster_id() -> str:
    # Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding. An id that starts
    # with "-" is read by the storage tool's argument parser as an option, so draw again.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even when called inside a running loop."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, factory()).result()


class KafkaBroker(ServerProcess):
    """One KRaft node (``process.roles=broker,controller``) on two free loopback ports."""

    start_timeout = START_TIMEOUT
    stop_timeout = STOP_TIMEOUT
    poll_interval = 0.25
    readiness = "metadata"

    def __init__(self, workdir: Path, *, name: str = "kafka", heap: str = "512m") -> None:
        super().__init__(workdir, name=name)
        self.home = kafka_home()
        self.host = HOST
        self.port = free_port(HOST)
        self.controller_port = free_port(HOST)
        self.heap = heap
        self.data_dir = workdir / "data"
        self.config_path = workdir / "server.properties"
        self.cluster_id = _random_cluster_id()

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def _write_config(self) -> None:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            # A static voter set: single-node KRaft without the dynamic-quorum --standalone format.
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "3",
            "default.replication.factor": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Consumer groups form at once instead of waiting 3 s for more members.
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
        }
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java",
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.workdir / 'logs'}",
            "-cp",
            str(self.home / "libs" / "*"),
            main,
            *args,
        ]

    def _format(self, *extra: str) -> None:
        self._write_config()
        fmt = ManagedProcess(
            f"{self.name}-format",
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                self.cluster_id,
                "-c",
                str(self.config_path),
                *extra,
            ),
            self.workdir,
        )
        try:
            code = fmt.popen.wait(timeout=60)
        finally:
            fmt.stop()
        if code != 0:
            raise RuntimeError(f"kafka storage format failed with {code}\n{fmt.tail()}")

    def ready(self) -> bool:
        # Skip the client until the listener is up: it would log a connection error per attempt.
        if not port_open(self.port, self.host):
            return False

        async def probe() -> bool:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.bootstrap, request_timeout_ms=5000, retry_backoff_ms=100
            )
            await admin.start()
            try:
                cluster = await admin.describe_cluster()
                return bool(cluster.get("brokers")) and cluster.get("controller_id", -1) >= 0
            finally:
                await admin.close()

        return _run_async(probe)

    @property
    def address(self) -> str:
        return self.bootstrap

    def argv(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.config_path))

    def prepare(self) -> None:
        if not (self.data_dir / "meta.properties").is_file():
            self._format()

    def repick_ports(self) -> None:
        # The ports are not part of the formatted storage, so new ones only need a new config.
        self.port, self.controller_port = free_port(HOST), free_port(HOST)
        self._write_config()

    async def arestart(self) -> KafkaBroker:
        """``restart()`` for async tests, without blocking their event loop."""
        return await asyncio.to_thread(self.restart)
