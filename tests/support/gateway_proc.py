"""A real gateway process (``python -m realtime_gateway serve``) on a free loopback port."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from realtime_contract import Env
from tests.support.procs import ManagedProcess, free_port, wait_until

START_TIMEOUT = 30.0


def http_json(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    """GET ``url``; (status, parsed JSON body or text). 4xx/5xx are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class GatewayProcess:
    """Started on construction; ready (``/readyz`` 200) when the constructor returns."""

    def __init__(self, env: dict[str, str], log_dir: Path, name: str = "gateway") -> None:
        self.name = name
        self.port = free_port()
        self.env = {
            Env.HOST: "127.0.0.1",
            Env.PORT: str(self.port),
            Env.INSTANCE_ID: name,
            Env.LOG_LEVEL: "info",
            # Short drain so teardown does not wait out clients a test left connected.
            Env.DRAIN_SECONDS: "2",
            **env,
        }
        self.proc = ManagedProcess(
            name, [sys.executable, "-m", "realtime_gateway", "serve"], log_dir, env=self.env
        )
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def readyz(self) -> tuple[int, Any]:
        return http_json(self.url + "/readyz")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            status, body = self.readyz()
            return body if status == 200 and isinstance(body, dict) else None

        return wait_until(probe, timeout=timeout, what=f"{self.name} /readyz 200", proc=self.proc)

    def fanout_stats(self) -> dict[str, Any]:
        """The instance's own pub/sub counters (``received``, ``channels``, ``rooms``)."""
        _, body = self.readyz()
        stats: dict[str, Any] = body["fanout"]
        return stats

    def tail(self, lines: int = 60) -> str:
        return self.proc.tail(lines)

    def stop(self) -> int | None:
        return self.proc.stop()

    def kill(self) -> None:
        self.proc.kill()
