#!/usr/bin/env bash
# Installs or builds every real server the tests need; each step is cached by version.
source "$(dirname "$0")/common.sh"
start=$(date +%s)
bash "$TOOLS_DIR/redis.sh"
bash "$TOOLS_DIR/kafka.sh"
bash "$TOOLS_DIR/kube.sh"
bash "$TOOLS_DIR/helm.sh"
log "all servers provisioned in $(( $(date +%s) - start ))s (cache: $CACHE_DIR)"
