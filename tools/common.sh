# Shared helpers for the provisioning scripts. Source, do not execute.
set -euo pipefail
TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$TOOLS_DIR/versions.env"
CACHE_DIR="${RTG_CACHE_DIR:-$HOME/.cache/realtime-gateway}"
mkdir -p "$CACHE_DIR"
log() { printf '[provision %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
need() {
  # need CMD "how to install" -- fail with a message naming what is missing
  if ! command -v "$1" >/dev/null 2>&1; then
    log "missing required tool '$1': $2"
    exit 1
  fi
}
apt_install() {
  # apt_install PKG... -- installs only what is missing; runs apt-get update once
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    if [ ! -f "$CACHE_DIR/.apt-updated" ]; then apt-get update -qq && touch "$CACHE_DIR/.apt-updated"; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}
