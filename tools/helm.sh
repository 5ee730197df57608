#!/usr/bin/env bash
# Builds helm v$HELM_VERSION from its Go module into $CACHE_DIR/helm-v$HELM_VERSION/bin (cached by version).
source "$(dirname "$0")/common.sh"
# the official Go tarball's location, in case a non-login shell has not put it on PATH
[ -x /usr/local/go/bin/go ] && PATH="$PATH:/usr/local/go/bin"
need go "install Go >= 1.24 (e.g. the official tarball in /usr/local/go, or 'apt-get install golang-go' if new enough)"
HELM_BIN="$CACHE_DIR/helm-v$HELM_VERSION/bin"
mkdir -p "$HELM_BIN"
if [ -x "$HELM_BIN/helm" ] && [ "$(cat "$HELM_BIN/.helm.stamp" 2>/dev/null)" = "v$HELM_VERSION" ]; then
  log "helm: v$HELM_VERSION cached"
  exit 0
fi
log "helm: building v$HELM_VERSION"
t=$(date +%s)
# helm reads its own version from these vars; the defaults would say v3.x-dev
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
CGO_ENABLED=0 GOBIN="$HELM_BIN" nice -n 10 go install -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
printf '%s' "v$HELM_VERSION" >"$HELM_BIN/.helm.stamp"
log "helm: built v$HELM_VERSION in $(($(date +%s) - t))s ($HELM_BIN/helm)"
