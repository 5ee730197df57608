"""Builds the gateway's hot modules as C extensions beside their sources (Cython), rebuilding only
what changed; ``RTG_PURE_PYTHON=1`` removes them instead, for profiling Python lines (py-spy sees
compiled functions as native frames). The list is ``realtime_gateway/compiled.py``'s.

    .venv/bin/python tools/compile_gateway.py
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "gateway" / "src"


def _compiled_module() -> ModuleType:
    # Loaded by path: importing the package would run its stale-copy guard, which warns about
    # exactly the copies this script is about to rebuild.
    spec = importlib.util.spec_from_file_location("_compiled", SOURCES / "realtime_gateway" / "compiled.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def remove(compiled: ModuleType) -> None:
    for name in compiled.COMPILED_MODULES:
        path = compiled.compiled_of(name, SOURCES)
        if path is not None:
            path.unlink()
            print(f"removed {path.relative_to(ROOT)}")


def build(compiled: ModuleType) -> None:
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    os.chdir(ROOT)
    extensions = [
        Extension(name, [str(compiled.source_of(name, SOURCES).relative_to(ROOT))])
        for name in compiled.COMPILED_MODULES
    ]
    jobs = os.cpu_count() or 1
    modules = cythonize(  # type: ignore[no-untyped-call]  # Cython's own function is unannotated
        extensions,
        build_dir="build/cython",
        nthreads=jobs,
        quiet=True,
        # Annotations stay hints: typed as C, an ``int`` or ``float`` parameter would change
        # what the function accepts.
        compiler_directives={"language_level": 3, "annotation_typing": False},
    )
    dist = Distribution({"ext_modules": modules, "package_dir": {"": "gateway/src"}})
    command = build_ext(dist)
    command.inplace = True
    command.build_temp = "build/cython/temp"
    command.parallel = jobs
    command.ensure_finalized()
    command.run()


def main() -> int:
    compiled = _compiled_module()
    if os.environ.get("RTG_PURE_PYTHON"):
        remove(compiled)
    else:
        build(compiled)
    return 0


if __name__ == "__main__":
    sys.exit(main())
