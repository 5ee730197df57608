"""Pinned server versions, parsed from tools/versions.env (the single source of truth)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = REPO_ROOT / "tools"


def _parse(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


VERSIONS = _parse(TOOLS_DIR / "versions.env")
CACHE_DIR = Path(os.environ.get("RTG_CACHE_DIR", str(Path.home() / ".cache" / "realtime-gateway")))
