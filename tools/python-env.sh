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
