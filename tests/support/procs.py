"""Process and readiness helpers shared by every server fixture."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self, TypeVar

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    proc: ManagedProcess | None = None,
) -> T:
    """Poll ``probe`` until it returns a truthy value; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.popen.returncode}\n{proc.tail()}")
        try:
            result = probe()
            if result:
                return result
        except Exception as exc:  # the probe's failure is the condition not being met yet
            last_exc = exc
        time.sleep(interval)
    detail = f" (last error: {last_exc!r})" if last_exc else ""
    tail = f"\n{proc.tail()}" if proc is not None else ""
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}{detail}{tail}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


class ManagedProcess:
    """A child process with its output in a log file, stopped with SIGTERM then SIGKILL."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        full_env = {**os.environ, **(env or {})}
        self.popen = subprocess.Popen(
            list(argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return f"--- last lines of {self.log_path} ---\n" + "\n".join(text[-lines:])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (fault injection)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.popen.returncode


class ServerProcess:
    """A server run as one ``ManagedProcess`` on free loopback ports, in a directory the caller owns.

    Subclasses say how to run it (``argv``), when it is ready (``ready``) and how to pick new ports
    (``repick_ports``); ``restart()`` keeps the ports and the data.
    """

    start_timeout = 20.0
    stop_timeout = 15.0
    poll_interval = 0.1
    readiness = "ready"

    def __init__(self, workdir: Path, *, name: str, ports_fixed: bool = False) -> None:
        self.name = name
        self.workdir = workdir
        self.proc: ManagedProcess | None = None
        self.start_seconds = 0.0
        # Ports may be re-picked only before the first start; after that restarts keep them.
        self._ports_fixed = ports_fixed
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def address(self) -> str:
        raise NotImplementedError

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def repick_ports(self) -> None:
        raise NotImplementedError

    def prepare(self) -> None:
        """Runs before every start (e.g. one-time storage formatting)."""

    def start(self) -> Self:
        if self.proc is not None and self.proc.alive():
            raise RuntimeError(f"{self.name} on {self.address} is already running")
        started = time.monotonic()
        self.prepare()
        attempts = 1 if self._ports_fixed else 3
        for attempt in range(1, attempts + 1):
            self.proc = ManagedProcess(self.name, self.argv(), self.workdir, cwd=self.workdir)
            try:
                wait_until(
                    self.ready,
                    timeout=self.start_timeout,
                    interval=self.poll_interval,
                    what=f"{self.name} {self.readiness} on {self.address}",
                    proc=self.proc,
                )
                break
            except RuntimeError:
                # A free port can be taken by another process between picking and binding.
                lost_race = "Address already in use" in self.proc.tail(200)
                self.stop()
                if not lost_race or attempt == attempts:
                    raise
                self.repick_ports()
            except BaseException:
                self.stop()
                raise
        self._ports_fixed = True
        self.start_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Graceful stop (SIGTERM), SIGKILL after ``stop_timeout``."""
        if self.proc is not None:
            self.proc.stop(timeout=self.stop_timeout)
            self.proc = None

    def kill(self) -> None:
        """Crash the server (SIGKILL), for fault-injection tests; ``start()`` brings it back."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.stop()
            self.proc = None

    def restart(self) -> Self:
        """Stop and start again on the same ports with the same data directory."""
        self.stop()
        return self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
