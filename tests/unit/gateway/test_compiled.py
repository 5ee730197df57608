"""The compiled hot modules: in use in this checkout, and never run in place of a newer source."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from realtime_gateway.compiled import COMPILED_MODULES, compiled_of, is_compiled, stale_modules

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(bool(os.environ.get("RTG_PURE_PYTHON")), reason="RTG_PURE_PYTHON: built without them")
def test_every_listed_module_runs_compiled() -> None:
    # tools/python-env.sh builds them; a build that silently dropped one would lose its speed.
    interpreted = [name for name in COMPILED_MODULES if not is_compiled(importlib.import_module(name))]
    assert interpreted == []
    assert stale_modules() == {}


def _package(root: Path, value: str) -> Path:
    package = root / "pkgx"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    source = package / "mod.py"
    source.write_text(f"VALUE = {value!r}\n")
    return source


def test_a_copy_older_than_its_source_is_stale(tmp_path: Path) -> None:
    source = _package(tmp_path, "x")
    assert stale_modules(["pkgx.mod"], tmp_path) == {}  # no compiled copy
    copy = source.with_suffix(importlib.machinery.EXTENSION_SUFFIXES[0])
    copy.write_bytes(b"")
    os.utime(source, (1_000, 1_000))
    os.utime(copy, (2_000, 2_000))
    assert stale_modules(["pkgx.mod"], tmp_path) == {}
    os.utime(source, (3_000, 3_000))
    assert stale_modules(["pkgx.mod"], tmp_path) == {"pkgx.mod": source}


def test_an_edited_module_runs_as_its_source_not_its_compiled_copy(tmp_path: Path) -> None:
    source = _package(tmp_path, "compiled")
    build = subprocess.run(
        [sys.executable, "-m", "Cython.Build.Cythonize", "-i", "-3", "-q", str(source)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, build.stderr
    assert compiled_of("pkgx.mod", tmp_path) is not None
    source.write_text("VALUE = 'edited'\n")
    os.utime(source, None)  # newer than the copy even on a coarse clock
    copy = compiled_of("pkgx.mod", tmp_path)
    assert copy is not None
    os.utime(copy, (copy.stat().st_mtime - 10, copy.stat().st_mtime - 10))

    def value(guarded: bool) -> str:
        script = textwrap.dedent(
            f"""
            import sys, warnings
            sys.path.insert(0, {str(tmp_path)!r})
            from pathlib import Path
            from realtime_gateway.compiled import prefer_fresh_sources
            warnings.simplefilter("ignore")
            if {guarded}:
                prefer_fresh_sources(["pkgx.mod"], Path({str(tmp_path)!r}))
            import pkgx.mod
            print(pkgx.mod.VALUE)
            """
        )
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    assert value(guarded=False) == "compiled"  # what Python itself would run
    assert value(guarded=True) == "edited"
