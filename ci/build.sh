#!/usr/bin/env bash
# The main job: set the machine up if needed, then build the default layer set
# (layers/debian-trixie) into out/. Extra arguments go to `strata build`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then
  bash ci/setup.sh
else
  echo "not root: skipping ci/setup.sh (podman and a trixie base image must already be there)" >&2
fi
exec cargo run --release -- build "$@"
