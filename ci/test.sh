#!/usr/bin/env bash
# The whole test suite, on a fresh machine: set the machine up (ci/setup.sh, idempotent),
# then run every test tier. Tests that need podman, the registry, qemu or a reference tool
# fail (not skip) here: STRATA_REQUIRE_TOOLS=1.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "ci/test.sh must run as root (it installs packages and runs rootless builds as another user)" >&2; exit 1; }
bash ci/setup.sh

export STRATA_REQUIRE_TOOLS=1
export CARGO_TERM_COLOR=never
# Unit tests, format cross-checks, registry tests, and the end-to-end builds + qemu boots.
# --release: the end-to-end tests run the real binary on real data (zstd -19 over ~70 MB).
cargo test --workspace --release --no-fail-fast
