#!/usr/bin/env bash
# Builds a real Kubernetes control plane for the cluster tests, from the published Go modules:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler (k8s.io/kubernetes v$KUBE_VERSION)
# into $CACHE_DIR/kube-v$KUBE_VERSION/bin, and kwok (fake kubelets) into $CACHE_DIR/kwok-v$KWOK_VERSION/bin.
# A warm run finds the stamps and builds nothing.
source "$(dirname "$0")/common.sh"
# the official Go tarball's location, in case a non-login shell has not put it on PATH
[ -x /usr/local/go/bin/go ] && PATH="$PATH:/usr/local/go/bin"
need go "install Go >= 1.24 (e.g. the official tarball in /usr/local/go, or 'apt-get install golang-go' if new enough)"

V="$KUBE_VERSION"
minor="$(echo "$V" | cut -d. -f2)"
KUBE_DIR="$CACHE_DIR/kube-v$V"
SRC="$KUBE_DIR/src"
BIN="$KUBE_DIR/bin"
KWOK_BIN="$CACHE_DIR/kwok-v$KWOK_VERSION/bin"
mkdir -p "$BIN" "$KWOK_BIN"

# Version stamping: without it the servers report v0.0.0-master, which breaks helm's kubeVersion checks.
build_date="$(date -u -d @0 +%Y-%m-%dT%H:%M:%SZ)"
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=v$V -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done
ldflags="-s -w$ldflags"

stamp_ok() { # stamp_ok FILE EXPECTED
  [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]
}

total_start=$(date +%s)
mod_stamp="$SRC/.generated"
# regenerate when the version or the generator changes
mod_want="v$V $(cat "$TOOLS_DIR/kube/gen-gomod.sh" "$TOOLS_DIR/kube/tools.go.in" | sha256sum | cut -c1-16)"
if ! stamp_ok "$mod_stamp" "$mod_want"; then
  log "kube: generating the build module in $SRC"
  t=$(date +%s)
  n="$(bash "$TOOLS_DIR/kube/gen-gomod.sh" "$V" "$SRC")"
  log "kube: go.mod replaces $n staging modules with v0.$minor.${V##*.}; resolving dependencies (go mod tidy)"
  (cd "$SRC" && go mod tidy)
  printf '%s' "$mod_want" >"$mod_stamp"
  log "kube: module ready in $(($(date +%s) - t))s"
fi
etcd_version="$(cd "$SRC" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"

build() { # build NAME PACKAGE EXTRA_LDFLAGS
  local name="$1" pkg="$2" flags="$3"
  local want="$pkg $flags $mod_want"
  if [ -x "$BIN/$name" ] && stamp_ok "$BIN/.$name.stamp" "$want"; then
    log "kube: $name cached"
    return
  fi
  log "kube: building $name ($pkg)"
  local t
  t=$(date +%s)
  (cd "$SRC" && CGO_ENABLED=0 nice -n 10 go build -ldflags "$flags" -o "$BIN/$name.tmp" "$pkg")
  mv "$BIN/$name.tmp" "$BIN/$name"
  printf '%s' "$want" >"$BIN/.$name.stamp"
  log "kube: built $name in $(($(date +%s) - t))s"
}

build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$ldflags"
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$ldflags"
build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$ldflags"
build etcd go.etcd.io/etcd/server/v3 "-s -w"
printf '%s\n' "$etcd_version" >"$BIN/etcd.version"

if [ -x "$KWOK_BIN/kwok" ] && stamp_ok "$KWOK_BIN/.kwok.stamp" "v$KWOK_VERSION"; then
  log "kube: kwok cached"
else
  log "kube: building kwok v$KWOK_VERSION"
  t=$(date +%s)
  CGO_ENABLED=0 GOBIN="$KWOK_BIN" nice -n 10 go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
  printf '%s' "v$KWOK_VERSION" >"$KWOK_BIN/.kwok.stamp"
  log "kube: built kwok in $(($(date +%s) - t))s"
fi
log "kube: ready in $(($(date +%s) - total_start))s: kubernetes v$V, etcd $etcd_version, kwok v$KWOK_VERSION ($BIN, $KWOK_BIN)"
