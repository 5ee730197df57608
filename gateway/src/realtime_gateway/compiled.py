"""The gateway modules compiled to C extensions by Cython (``tools/compile_gateway.py``), and the
guard that keeps an edited module from running as its stale compiled copy.

The compiled copy sits beside the source, and Python prefers an extension module to a ``.py``
file of the same name. After an edit (a live update in a container, a checkout, a change not yet
rebuilt) the copy would run the old code; a copy older than its source is therefore passed over
for the source, with a warning. This module itself is never compiled.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Final

# The hot paths: each client event, each delivery, each Redis reply and each Kafka record runs
# through these. Plain Python compiled as is (no C types), so their behaviour is the source's.
COMPILED_MODULES: Final = (
    "realtime_gateway.tasks",
    "realtime_gateway.transport.direct",
    "realtime_gateway.transport.handlers",
    "realtime_gateway.transport.inline",
    "realtime_gateway.transport.payloads",
    "realtime_gateway.transport.server",
    "realtime_gateway.fanout.bus",
    "realtime_gateway.fanout.emitter",
    "realtime_gateway.fanout.manager",
    "realtime_gateway.fanout.message",
    "realtime_gateway.recovery.emitter",
    "realtime_gateway.recovery.history",
    "realtime_gateway.recovery.manager",
    "realtime_gateway.observability.logs",
    "realtime_gateway.observability.metrics",
    "realtime_gateway.observability.wiring",
    "realtime_gateway.ratelimit.bucket",
    "realtime_gateway.state.memory",
    "realtime_gateway.state.multiplex",
    "realtime_gateway.state.resp",
    "realtime_gateway.ingest.consumer",
    "realtime_gateway.ingest.dispatch",
    "realtime_gateway.ingest.reader",
)

_ROOT: Final = Path(__file__).resolve().parent.parent


def source_of(module: str, root: Path = _ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def compiled_of(module: str, root: Path = _ROOT) -> Path | None:
    """The module's extension file beside its source, if one was built for this interpreter."""
    source = source_of(module, root)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = source.with_suffix(suffix)
        if candidate.exists():
            return candidate
    return None


def stale_modules(modules: Sequence[str] = COMPILED_MODULES, root: Path = _ROOT) -> dict[str, Path]:
    """Module name -> source, for each module whose compiled copy is older than its source."""
    stale: dict[str, Path] = {}
    for module in modules:
        compiled = compiled_of(module, root)
        source = source_of(module, root)
        if compiled is not None and source.exists() and source.stat().st_mtime > compiled.stat().st_mtime:
            stale[module] = source
    return stale


def is_compiled(module: ModuleType) -> bool:
    return not str(getattr(module, "__file__", "")).endswith(".py")


class SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the listed modules as their sources, ahead of the path finder's extension files."""

    def __init__(self, sources: dict[str, Path]) -> None:
        self.sources = sources

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        source = self.sources.get(fullname)
        return importlib.util.spec_from_file_location(fullname, source) if source is not None else None


def prefer_fresh_sources(modules: Sequence[str] = COMPILED_MODULES, root: Path = _ROOT) -> None:
    stale = stale_modules(modules, root)
    if not stale:
        return
    warnings.warn(
        f"compiled copies older than their sources, running the sources: {', '.join(sorted(stale))} "
        "(rebuild with `bash tools/python-env.sh`)",
        RuntimeWarning,
        stacklevel=2,
    )
    sys.meta_path.insert(0, SourceFirst(stale))
