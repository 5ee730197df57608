#!/usr/bin/env bash
# placeholder, filled in by the foundation work
source "$(dirname "$0")/common.sh"
log "helm: nothing to do yet"
