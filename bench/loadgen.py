"""Driving the Node load generator (bench/reference/loadgen.js): one JSON object per line each way."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

from bench.servers import REFERENCE_DIR


class LoadgenError(RuntimeError):
    pass


class Loadgen:
    """One load-generator process; ``start`` returns once it reports ``ready`` (or its result, for C)."""

    def __init__(self, name: str, config: dict[str, Any], run_dir: Path) -> None:
        self.name = name
        self.config = config
        self.run_dir = run_dir
        self.proc: asyncio.subprocess.Process | None = None
        self._stderr_path = run_dir / f"{name}.log"

    async def start(self, wait_s: float) -> dict[str, Any]:
        cfg_path = self.run_dir / f"{self.name}.json"
        cfg_path.write_text(json.dumps(self.config))
        node = shutil.which("node")
        if node is None:
            raise LoadgenError("node not found: apt-get install nodejs npm")
        with self._stderr_path.open("ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                node,
                # The generator holds up to ~15k sockets; give V8 room so GC pauses stay short.
                "--max-old-space-size=4096",
                str(REFERENCE_DIR / "loadgen.js"),
                str(cfg_path),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                cwd=REFERENCE_DIR,
                limit=64 * 1024 * 1024,
            )
        return await self.read(wait_s)

    async def read(self, wait_s: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), wait_s)
        except TimeoutError:
            raise LoadgenError(f"{self.name}: no answer within {wait_s}s\n{self.tail()}") from None
        if not line:
            await self.proc.wait()
            raise LoadgenError(f"{self.name}: exited with {self.proc.returncode}\n{self.tail()}")
        msg: dict[str, Any] = json.loads(line)
        if msg.get("type") == "error":
            raise LoadgenError(f"{self.name}: {msg.get('message')}")
        return msg

    async def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()

    async def start_collect(self, cmd: dict[str, Any], wait_s: float = 30) -> None:
        """Send a ``collect`` command and return once the generator counts: an event that reaches
        it before then is not counted, so whatever the caller sends must start after this."""
        await self.send({**cmd, "cmd": "collect"})
        opened = await self.read(wait_s)
        if opened.get("type") != "collecting":
            raise LoadgenError(f"{self.name}: expected the collect window to open, got {opened}")

    async def command(self, cmd: dict[str, Any], wait_s: float) -> dict[str, Any]:
        await self.send(cmd)
        return await self.read(wait_s)

    def tail(self, lines: int = 20) -> str:
        try:
            text = self._stderr_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    async def close(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            await self.send({"cmd": "quit"})
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
