#!/usr/bin/env bash
# Redis for the tests: Debian's redis-server (standalone and cluster mode, both started by the
# fixtures on free ports). Sharded pub/sub (SPUBLISH/SSUBSCRIBE) needs Redis >= 7.0.
source "$(dirname "$0")/common.sh"

apt_install redis-server redis-tools

# The package starts a system service on 6379; the tests start their own servers, so stop it
# (and keep it from coming back) rather than leave a stray shared instance around.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
  systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
if [ -x /etc/init.d/redis-server ] && /etc/init.d/redis-server status >/dev/null 2>&1; then
  /etc/init.d/redis-server stop >/dev/null 2>&1 || true
fi
# A policy-rc.d or a container without init may leave the daemon running anyway.
pidfile=/run/redis/redis-server.pid
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  kill "$(cat "$pidfile")" 2>/dev/null || true
fi

version=$(redis-server --version | sed -n 's/.* v=\([0-9][0-9.]*\).*/\1/p')
major=${version%%.*}
if [ -z "$version" ] || [ "$major" -lt 7 ]; then
  log "redis-server ${version:-?} is too old: sharded pub/sub needs >= 7.0"
  exit 1
fi
need redis-cli "apt-get install redis-tools"
log "redis-server $version ready ($(command -v redis-server))"
