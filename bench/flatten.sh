#!/usr/bin/env bash
# Flatten speed: `strata cpio` against GNU `cpio -o -H newc --reproducible | zstd` on the same
# tree, the base layer of the default layer set (the userspace of strata's initrd), at the
# same zstd levels. Prints hyperfine's figures, the time ratios and both sizes, and checks
# that both archives list the same entries.
#
# Usage: bench/flatten.sh [LEVEL...]          (default: 19 3)
# Run as root (the tree is extracted with its owners and device nodes). See bench/common.sh
# for STRATA_BENCH_DIR, STRATA, RUNS (default 3) and WARMUP (default 1).
#
# On a shared machine wall times are noisy; the CPU times (user + system, all processes of
# the command) hyperfine reports are printed next to them.
#
# Threads: strata's zstd encoder runs with as many workers as the machine has cores (libzstd
# gives the same bytes for any worker count), so its fair peer is `zstd -T0`; `zstd -T1` is
# shown as well. GNU cpio, find and sort run in the peer's pipeline next to zstd.
set -euo pipefail
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"

levels=${*:-19 3}
need hyperfine cpio zstd python3 find sort
[ "$(id -u)" = 0 ] || die "run as root: the base tree is extracted with its owners and device nodes"
find_strata
ensure_build

bench=$work/flatten
tree=$bench/tree
rm -rf "$bench"
mkdir -p "$tree"
# The initrd's first member is the base layer (strata pads each member with zeros to 4 bytes,
# which `zstd -dc` rejects after writing the first member, hence the split).
split_initrd_members "$out/initrd.cpio.zst" "$bench" >/dev/null
zstd -q -dc "$bench/member-1.zst" | (cd "$tree" && cpio -idm --quiet --no-absolute-filenames)
# Clamp at the newest mtime in the tree: a no-op for the content, but it runs strata's
# clamping pass and makes both archives carry the same times.
epoch=$(find "$tree" -printf '%T@\n' | sort -n | tail -n 1 | cut -d. -f1)
echo "tree: base layer of $out/initrd.cpio.zst, $(du -sh --apparent-size "$tree" | cut -f1)," \
  "$(find "$tree" -mindepth 1 | wc -l) entries; $(nproc) cores; $(zstd -V | sed 's/^\*\*\* //; s/ \*\*\*$//' | cut -d, -f1-2); $(cpio --version | head -n 1)"

for level in $levels; do
  step "zstd level $level"
  peer="cd $tree && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort | cpio -o -H newc --reproducible --quiet"
  hyperfine --warmup "${WARMUP:-1}" --runs "${RUNS:-3}" --export-json "$bench/l$level.json" \
    -n strata "$strata cpio $tree -o $bench/strata-$level.cpio.zst --compression zstd:$level --source-date-epoch $epoch" \
    -n "cpio|zstd -T0" "sh -c \"$peer | zstd -q -$level -T0 > $bench/cli-T0-$level.cpio.zst\"" \
    -n "cpio|zstd -T1" "sh -c \"$peer | zstd -q -$level -T1 > $bench/cli-T1-$level.cpio.zst\""
  python3 - "$bench" "$level" <<'PY'
import json, os, sys
bench, level = sys.argv[1], sys.argv[2]
runs = {r["command"]: r for r in json.load(open(f"{bench}/l{level}.json"))["results"]}
s = runs["strata"]
size = lambda name: os.path.getsize(f"{bench}/{name}-{level}.cpio.zst")
ss = size("strata")
cpu = lambda r: r["user"] + r["system"]
sd = lambda r: f"{r['stddev']:.2f}" if r["stddev"] is not None else "?"
print(f"level {level}: strata {s['mean']:.2f} ± {sd(s)} s wall, {cpu(s):.2f} s CPU, {ss} bytes")
for peer, file in (("cpio|zstd -T0", "cli-T0"), ("cpio|zstd -T1", "cli-T1")):
    p = runs[peer]
    ps = size(file)
    print(f"  vs {peer}: {p['mean']:.2f} ± {sd(p)} s wall, {cpu(p):.2f} s CPU, {ps} bytes;"
          f" strata is {p['mean'] / s['mean']:.2f}x as fast (wall), {cpu(p) / cpu(s):.2f}x (CPU);"
          f" size ratio strata/peer {ss / ps:.4f}")
PY
  # Same entries, modes, owners, sizes and times in both archives (inode and link counts
  # aside: cpio -tv prints the link count, which both keep).
  rm -rf "$bench/members"
  initrd_cpio "$bench/strata-$level.cpio.zst" "$bench/members" | cpio -itv --quiet --numeric-uid-gid | sort -k9 >"$bench/strata-$level.list"
  zstd -q -dc "$bench/cli-T0-$level.cpio.zst" | cpio -itv --quiet --numeric-uid-gid | sort -k9 >"$bench/cli-$level.list"
  if cmp -s "$bench/strata-$level.list" "$bench/cli-$level.list"; then
    echo "  listings (cpio -tv): identical, $(wc -l <"$bench/strata-$level.list") entries"
  else
    echo "  listings (cpio -tv) differ:" >&2
    diff "$bench/strata-$level.list" "$bench/cli-$level.list" | head -n 20 >&2
    exit 1
  fi
done
