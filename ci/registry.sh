#!/usr/bin/env bash
# Start (or stop) Debian's docker-registry on loopback, with our own config (the packaged one
# enables htpasswd auth). Usage: ci/registry.sh start|stop
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=ci/lib.sh
. "$here/lib.sh"

dir=$CI_CACHE/registry
conf=$dir/config.yml
pidfile=$dir/registry.pid

case "${1:-start}" in
start)
  install -d "$dir/data"
  write_if_changed "$conf" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
EOF
  if curl -fsS "http://$REGISTRY_ADDR/v2/" >/dev/null 2>&1; then
    echo "registry already answers on $REGISTRY_ADDR"
    exit 0
  fi
  nohup docker-registry serve "$conf" >"$dir/registry.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 50); do
    if curl -fsS "http://$REGISTRY_ADDR/v2/" >/dev/null 2>&1; then
      echo "registry started on $REGISTRY_ADDR"
      exit 0
    fi
    sleep 0.2
  done
  cat "$dir/registry.log" >&2
  die "docker-registry did not answer on $REGISTRY_ADDR within 10 s"
  ;;
stop)
  if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null && rm -f "$pidfile"; fi
  ;;
*) die "usage: $0 start|stop" ;;
esac
