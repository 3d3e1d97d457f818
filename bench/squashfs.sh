#!/bin/sh
# Benchmark strata's squashfs writer against mksquashfs on the same tree, same compressor
# (zstd), same level and block size (128 KiB).
#
# Usage: bench/squashfs.sh [SRC_DIR] [ZSTD_LEVEL]
# Without SRC_DIR, a copy of /usr/lib/x86_64-linux-gnu and /usr/bin is made under
# $TMPDIR (default /tmp) and used. RUNS and WARMUP set hyperfine's counts (3 and 1).
# Needs: cargo, hyperfine, mksquashfs, unsquashfs, python3.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${TMPDIR:-/tmp}/strata-squashfs-bench
level=${2:-15}
mkdir -p "$work"

if [ $# -ge 1 ]; then
    src=$1
else
    src=$work/tree
    if [ ! -d "$src" ]; then
        mkdir -p "$src/usr/lib"
        cp -a /usr/lib/x86_64-linux-gnu "$src/usr/lib/"
        cp -a /usr/bin "$src/usr/"
    fi
fi

for tool in cargo hyperfine mksquashfs unsquashfs; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done

cargo build --quiet --release --manifest-path "$repo/Cargo.toml" -p strata-format --example squashfs_bench
target_dir=$(cargo metadata --quiet --format-version 1 --manifest-path "$repo/Cargo.toml" \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bench=$target_dir/release/examples/squashfs_bench

echo "tree: $src ($(du -sh "$src" | cut -f1)), zstd level $level, 128 KiB blocks, $(nproc) cores"
hyperfine --warmup "${WARMUP:-1}" --runs "${RUNS:-3}" --export-json "$work/hyperfine.json" \
    -n strata "$bench $src $work/strata.sqfs $level" \
    -n mksquashfs "mksquashfs $src $work/mksquashfs.sqfs -comp zstd -Xcompression-level $level -b 131072 -noappend -no-progress -quiet"

strata_size=$(stat -c %s "$work/strata.sqfs")
mks_size=$(stat -c %s "$work/mksquashfs.sqfs")
python3 - "$work/hyperfine.json" "$strata_size" "$mks_size" <<'PY'
import json, sys
runs = {r["command"]: r["mean"] for r in json.load(open(sys.argv[1]))["results"]}
strata, mks = runs["strata"], runs["mksquashfs"]
s, m = int(sys.argv[2]), int(sys.argv[3])
print(f"time: strata {strata:.2f} s, mksquashfs {mks:.2f} s, ratio strata/mksquashfs {strata / mks:.2f}")
print(f"size: strata {s} bytes, mksquashfs {m} bytes, ratio {s / m:.4f}")
PY

# Both images must hold the same tree.
unsquashfs -lln "$work/strata.sqfs" | sed 's/  */ /g; /^d/s/ [0-9]* / /' | sort > "$work/strata.list"
unsquashfs -lln "$work/mksquashfs.sqfs" | sed 's/  */ /g; /^d/s/ [0-9]* / /' | sort > "$work/mksquashfs.list"
if cmp -s "$work/strata.list" "$work/mksquashfs.list"; then
    echo "listings: identical ($(wc -l < "$work/strata.list") entries)"
else
    echo "listings differ:" >&2
    diff "$work/strata.list" "$work/mksquashfs.list" | head -20 >&2
    exit 1
fi
