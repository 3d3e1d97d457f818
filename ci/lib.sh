# Shared settings and helpers for the ci/ scripts. Sourced, not run.
# shellcheck shell=bash

ROOTLESS_USER=${STRATA_ROOTLESS_USER:-strata-ci}
BASE_IMAGE=docker.io/library/debian:trixie
DEBIAN_MIRROR=${STRATA_CI_MIRROR:-http://deb.debian.org/debian}
REGISTRY_ADDR=127.0.0.1:5000
CI_CACHE=${STRATA_CI_CACHE:-/var/cache/strata-ci}

die() { echo "error: $*" >&2; exit 1; }
step() { echo "== $*" >&2; }

# Write stdin to $1 only when the content differs (keeps mtimes and running services stable).
write_if_changed() {
  local dest=$1 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then
    rm -f "$tmp"
  else
    install -m 0644 "$tmp" "$dest"
    rm -f "$tmp"
  fi
}

# Run a command as the unprivileged user, with the environment rootless podman needs.
as_rootless() {
  local uid
  uid=$(id -u "$ROOTLESS_USER")
  (cd / && runuser -u "$ROOTLESS_USER" -- env XDG_RUNTIME_DIR="/run/user/$uid" HOME="$(getent passwd "$ROOTLESS_USER" | cut -d: -f6)" "$@")
}
