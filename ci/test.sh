#!/usr/bin/env bash
# The whole test suite, on a fresh machine: set the machine up (ci/setup.sh, idempotent),
# then run every test tier. Tests that need podman, the registry, qemu or a reference tool
# are #[ignore]d (a plain `cargo test` leaves them out); --include-ignored runs them here,
# and a missing tool or service fails them.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "ci/test.sh must run as root (it installs packages and runs rootless builds as another user)" >&2; exit 1; }
bash ci/setup.sh

export CARGO_TERM_COLOR=never
# Gates: formatting, lints and docs, warnings denied.
cargo fmt --all --check
cargo clippy --workspace --all-targets --release -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --release
# Unit tests, format cross-checks, registry tests, and the end-to-end builds + qemu boots.
# --release: the end-to-end tests run the real binary on real data (zstd -19 over ~70 MB).
cargo test --workspace --release --no-fail-fast -- --include-ignored
