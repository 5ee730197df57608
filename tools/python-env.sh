#!/usr/bin/env bash
# Creates .venv and installs the project with its dev extras (skips pip when pyproject is unchanged).
source "$(dirname "$0")/common.sh"
cd "$TOOLS_DIR/.."
PY="${PYTHON:-python3}"
need "$PY" "install Python 3.11"
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$stamp" ]; then
  log "python deps up to date (warm)"
else
  log "installing python deps"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# The hot modules as C extensions (realtime_gateway/compiled.py); only changed ones are rebuilt.
if [ -n "${RTG_PURE_PYTHON:-}" ]; then
  .venv/bin/python tools/compile_gateway.py
else
  apt_install gcc
  log "compiling the gateway's hot modules (Cython; RTG_PURE_PYTHON=1 for none)"
  mkdir -p build
  if ! .venv/bin/python tools/compile_gateway.py >build/compile.log 2>&1; then
    tail -20 build/compile.log >&2
    log "compiling failed (full log: build/compile.log)"
    exit 1
  fi
fi
