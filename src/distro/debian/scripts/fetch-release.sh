#!/bin/sh
# Fetch the suite's InRelease file and print its header fields (strata reads Date: from it).
# Usage: fetch-release.sh MIRROR RELEASE
# Exit 90: the mirror could not be reached.
set -eu
mirror=$1 release=$2
if ! /usr/lib/apt/apt-helper download-file "$mirror/dists/$release/InRelease" /tmp/InRelease >/tmp/fetch.log 2>&1; then
  cat /tmp/fetch.log >&2
  exit 90
fi
sed -n '/^-----BEGIN PGP SIGNATURE/q;p' /tmp/InRelease | grep -E '^(Origin|Suite|Codename|Version|Date):'
