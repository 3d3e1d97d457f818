# Shared by bench/flatten.sh, bench/noop.sh and bench/mkinitramfs.sh. Sourced, not run.
# shellcheck shell=bash
#
# Environment:
#   STRATA_BENCH_DIR  work directory (default: $TMPDIR/strata-bench or /tmp/strata-bench);
#                     holds the strata cache (cache/) and build output (out/) the three
#                     scripts share, so only the first one to run pays for the real build.
#   STRATA            a strata binary to use instead of building one with cargo.
#   RUNS, WARMUP      hyperfine's --runs and --warmup.

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=${STRATA_BENCH_DIR:-${TMPDIR:-/tmp}/strata-bench}
cache=$work/cache
out=$work/out
layers=$repo/layers/debian-trixie

die() { echo "error: $*" >&2; exit 1; }
step() { echo "== $*" >&2; }

need() {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null || die "missing tool: $t (ci/setup.sh installs it)"
  done
}

# Sets $strata to a release binary: $STRATA, or one built here with cargo.
find_strata() {
  if [ -n "${STRATA:-}" ]; then
    strata=$STRATA
  else
    need cargo
    (cd "$repo" && cargo build --quiet --release --bin strata)
    local target=${CARGO_TARGET_DIR:-$repo/target}
    strata=$target/release/strata
  fi
  [ -x "$strata" ] || die "no strata binary at $strata"
}

# Build the default layer set into $out with the cache $cache: minutes from an empty cache
# (podman, mirror downloads), a no-op afterwards.
ensure_build() {
  mkdir -p "$work"
  step "strata build $layers -o $out --cache-dir $cache"
  local t0 t1
  t0=$(date +%s.%N)
  "$strata" build "$layers" -o "$out" --cache-dir "$cache" >"$work/build.stdout"
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "strata build took %.1f s\n", b - a }' >&2
  [ -s "$out/initrd.cpio.zst" ] || die "strata build wrote no $out/initrd.cpio.zst"
  [ -s "$out/vmlinuz" ] || die "strata build wrote no $out/vmlinuz"
}

# The kernel version the build's products.json records.
kernel_version() {
  python3 - "$out/products.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
print(next(x["version"] for x in p["products"] if x["kind"] == "kernel"))
PY
}

# Split an initrd into its members: uncompressed cpio archives (initramfs-tools puts an early
# one first) and zstd frames, each possibly followed by zero padding, into DIR/member-N.cpio
# or DIR/member-N.zst; prints the count. It walks the formats (newc headers; zstd frames per
# RFC 8878): a scan for magic numbers could match inside compressed data.
split_initrd_members() {
  python3 - "$1" "$2" <<'PY'
import os, sys
data = open(sys.argv[1], "rb").read()
outdir = sys.argv[2]
ZSTD = b"\x28\xb5\x2f\xfd"
align4 = lambda n: (n + 3) & ~3
pos, n = 0, 0
while pos < len(data):
    if data[pos] == 0:
        pos += 1
        continue
    start = pos
    if data[pos:pos + 6] == b"070701":
        ext = "cpio"
        while True:
            namesize = int(data[pos + 94:pos + 102], 16)
            filesize = int(data[pos + 54:pos + 62], 16)
            name = data[pos + 110:pos + 110 + namesize - 1]
            pos = align4(align4(pos + 110 + namesize) + filesize)
            if name == b"TRAILER!!!":
                break
    elif data[pos:pos + 4] == ZSTD:
        ext = "zst"
        fhd = data[pos + 4]
        single_segment = (fhd >> 5) & 1
        fcs_size = [0 if not single_segment else 1, 2, 4, 8][fhd >> 6]
        dict_size = [0, 1, 2, 4][fhd & 3]
        pos += 5 + (0 if single_segment else 1) + dict_size + fcs_size
        while True:
            h = int.from_bytes(data[pos:pos + 3], "little")
            last, btype, bsize = h & 1, (h >> 1) & 3, h >> 3
            pos += 3 + (1 if btype == 1 else bsize)
            if last:
                break
        if (fhd >> 2) & 1:
            pos += 4
    else:
        sys.exit(f"offset {pos}: neither zero padding, a newc cpio nor a zstd frame")
    n += 1
    with open(os.path.join(outdir, f"member-{n}.{ext}"), "wb") as f:
        f.write(data[start:pos])
print(n)
PY
}

# Every member of the initrd IMG, decompressed, to stdout (DIR holds the split members). Not
# `zstd -dc IMG`: it writes the first member, then fails on the zero padding after it.
initrd_cpio() {
  local img=$1 dir=$2 m
  mkdir -p "$dir"
  split_initrd_members "$img" "$dir" >/dev/null
  for m in "$dir"/member-*; do
    case $m in
      *.zst) zstd -q -dc "$m" ;;
      *) cat "$m" ;;
    esac
  done
}
