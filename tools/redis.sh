#!/usr/bin/env bash
# placeholder, filled in by the foundation work
source "$(dirname "$0")/common.sh"
log "redis: nothing to do yet"
