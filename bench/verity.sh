#!/bin/sh
# Compare strata's dm-verity hash tree writer with `veritysetup format` on the same 256 MiB
# random file (same salt and UUID, so both must print the same root hash), with hyperfine.
# Prints both timings and the speed ratio (veritysetup time / strata time; >= 1.0 means
# strata is at least as fast).
#
# Usage: bench/verity.sh [SIZE_MIB]   (needs cargo, hyperfine, veritysetup, jq)
set -eu

size_mib=${1:-256}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
salt=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
uuid=12345678-9abc-4def-8123-456789abcdef
veritysetup=$(command -v veritysetup || echo /usr/sbin/veritysetup)

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
cargo build --quiet --release --manifest-path "$repo/Cargo.toml" -p strata-format --example verity_bench
bench="$CARGO_TARGET_DIR/release/examples/verity_bench"

head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/data"

ours=$("$bench" "$work/data" "$work/ours.hash" "$salt" "$uuid")
theirs=$("$veritysetup" format --salt="$salt" --uuid="$uuid" "$work/data" "$work/theirs.hash" |
    sed -n 's/^Root hash:[[:space:]]*//p')
if [ "$ours" != "$theirs" ]; then
    echo "root hash differs: strata $ours, veritysetup $theirs" >&2
    exit 1
fi
cmp "$work/ours.hash" "$work/theirs.hash"
echo "root hash $ours, hash devices identical"

hyperfine --warmup 2 --runs 10 --export-json "$work/result.json" \
    --command-name strata "$bench $work/data $work/ours.hash $salt $uuid" \
    --command-name veritysetup "$veritysetup format --salt=$salt --uuid=$uuid $work/data $work/theirs.hash"

jq -r '
  (.results[] | select(.command == "strata") | .mean) as $ours
  | (.results[] | select(.command == "veritysetup") | .mean) as $theirs
  | "strata \($ours * 1000 | floor) ms, veritysetup \($theirs * 1000 | floor) ms, speed ratio (veritysetup/strata) \($theirs / $ours * 100 | round / 100)"
' "$work/result.json"
