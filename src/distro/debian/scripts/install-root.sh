#!/bin/sh
# Install packages into an empty build root with apt and dpkg (through mmdebstrap).
# Usage: install-root.sh MIRROR RELEASE COMPONENTS(comma-separated) ARCH PACKAGES(comma-separated) TARGET
#
# The root gets the Essential set (dpkg needs it to run maintainer scripts) plus the
# packages; strata prunes it to the packages' dependency closure afterwards. /usr is merged
# from the start (trixie's layout). SOURCE_DATE_EPOCH comes from the environment.
set -eu
mirror=$1 release=$2 components=$3 arch=$4 packages=$5 target=$6
exec mmdebstrap \
  --mode=root --variant=essential --format=directory \
  --architectures="$arch" --components="$components" --include="$packages" \
  --aptopt='Acquire::Retries "3"' \
  --setup-hook='mkdir -p "$1/usr/bin" "$1/usr/sbin" "$1/usr/lib" "$1/usr/lib64" && for d in bin sbin lib lib64; do ln -s "usr/$d" "$1/$d"; done' \
  "$release" "$target" "$mirror"
