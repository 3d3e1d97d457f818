# Shared by bench/flatten.sh, bench/noop.sh, bench/mkinitramfs.sh and bench/boot.sh. Sourced,
# not run.
# shellcheck shell=bash
#
# Environment:
#   STRATA_BENCH_DIR  work directory (default: $TMPDIR/strata-bench or /tmp/strata-bench);
#                     holds the strata cache (cache/) and build output (out/) the scripts
#                     share, so only the first one to run pays for the real build, and
#                     trixie's mkinitramfs image per kernel version (mkinitramfs/VERSION/).
#   STRATA            a strata binary to use instead of building one with cargo.
#   RUNS, WARMUP      hyperfine's --runs and --warmup.
#   BOOT_TIMEOUT      seconds a qemu boot may take (default 300) before it is killed.
#   STRATA_CI_CACHE   where the e2e tests cache the real root disk (default /var/cache/strata-ci).

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

# The real trixie root the e2e tests boot (tests/e2e/real_root.rs: systemd as PID 1 on ext4,
# its marker unit prints `STRATA-ROOT uptime=…` when the boot has finished and powers off):
# sets $disk to the newest cached disk $STRATA_CI_CACHE/roots/trixie-ext4-*.img (the tests
# keep one per recipe and remove outdated ones), checked to hold the root's ext4, and
# $append to the command line that boots it. Stops, saying how to make it, when there is none.
root_uuid=5a7a0c1e-7e57-4f00-8000-000000000001
append="console=ttyS0 panic=-1 root=UUID=$root_uuid ro"
# shellcheck disable=SC2034 # used by the scripts that source this file
root_marker='STRATA-ROOT uptime=([0-9.]+)'
find_real_root_disk() {
  local roots=${STRATA_CI_CACHE:-/var/cache/strata-ci}/roots f
  disk=
  for f in "$roots"/trixie-ext4-*.img; do
    if [ -f "$f" ] && { [ -z "$disk" ] || [ "$f" -nt "$disk" ]; }; then
      disk=$f
    fi
  done
  [ -n "$disk" ] || die "no real root disk $roots/trixie-ext4-*.img: make it with
  cargo test --release --test e2e_build default_set_boots_a_real_debian_root_by_uuid -- --include-ignored
(it builds the root with podman from Debian packages and caches the disk there)"
  # Its root partition starts at 1 MiB; the ext4 superblock is 1024 bytes in, the UUID at 0x68.
  python3 - "$disk" "$root_uuid" <<'PY' || die "$disk is not the real root disk (see tests/e2e/real_root.rs)"
import sys, uuid
with open(sys.argv[1], "rb") as f:
    f.seek((1 << 20) + 1024)
    sb = f.read(0x78)
if sb[0x38:0x3A] != b"\x53\xef" or str(uuid.UUID(bytes=sb[0x68:0x78])) != sys.argv[2]:
    sys.exit(f"{sys.argv[1]}: no ext4 with UUID {sys.argv[2]} at 1 MiB")
PY
  echo "root disk: $disk"
}

# Link $disk as FILE (or copy it sparse onto another filesystem): the same disk for every boot
# even if a test run replaces the cached one meanwhile. Boots open it with snapshot=on.
keep_real_root_disk() {
  ln "$disk" "$1" 2>/dev/null || cp --sparse=always "$disk" "$1"
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

# trixie's mkinitramfs image for the kernel version VERSION (strata's), made once per version
# in a trixie container; sets $mki_dir, which holds mkinitramfs.img, versions, initramfs.conf
# and mkinitramfs.seconds. Needs root (rootful podman, a bind mount for the container's output).
#
# apt's defaults, Recommends included, as on an ordinary trixie system: initramfs-tools then
# brings zstd (its COMPRESS=zstd) and busybox (BUSYBOX=auto puts it in the image), the kernel
# brings firmware-linux-free; initramfs.conf keeps MODULES=most. Delete $mki_dir/done to run
# the container again.
ensure_mkinitramfs() {
  local version=$1 image=docker.io/library/debian:trixie
  need podman
  [ "$(id -u)" = 0 ] || die "run as root (rootful podman, a bind mount for the container's output)"
  mki_dir=$work/mkinitramfs/$version
  mkdir -p "$mki_dir"
  step "mkinitramfs for $version in a trixie container"
  if [ ! -e "$mki_dir/done" ]; then
    podman image exists "$image" ||
      die "$image is not in podman's storage; run ci/setup.sh (no registry is reachable)"
    podman run --rm --network=host -v "$mki_dir:/out" -e "VER=$version" "$image" sh -euc '
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq initramfs-tools "linux-image-$VER" >/dev/null
      start=$(date +%s.%N)
      mkinitramfs -o /out/mkinitramfs.img "$VER"
      end=$(date +%s.%N)
      echo "$start $end" | awk "{ printf \"%.1f\n\", \$2 - \$1 }" >/out/mkinitramfs.seconds
      dpkg-query -W initramfs-tools klibc-utils busybox zstd firmware-linux-free "linux-image-$VER" >/out/versions
      grep -Ehv "^\s*(#|$)" /etc/initramfs-tools/initramfs.conf >/out/initramfs.conf
      touch /out/done
    '
  fi
  echo "in the container: $(tr '\n' ' ' <"$mki_dir/versions")"
  echo "initramfs.conf: $(tr '\n' ' ' <"$mki_dir/initramfs.conf")"
  echo "mkinitramfs ran for $(cat "$mki_dir/mkinitramfs.seconds") s (inside the container, after apt)"
}

# One cpio -tv listing of all the members (uncompressed cpio or zstd) of the initrd IMG, in
# DIR: count (members), members (one line each), bytes (uncompressed, one line per member),
# list (cpio -tv).
initrd_listing() {
  local img=$1 dir=$2 m
  mkdir -p "$dir"
  rm -f "$dir"/member-*
  split_initrd_members "$img" "$dir" >"$dir/count"
  : >"$dir/list"
  : >"$dir/bytes"
  : >"$dir/members"
  for m in "$dir"/member-*; do
    case $m in
      *.zst) zstd -q -dc "$m" >"$dir/cpio" ;;
      *.cpio) cp "$m" "$dir/cpio" ;;
    esac
    wc -c <"$dir/cpio" >>"$dir/bytes"
    cpio -itv --quiet --numeric-uid-gid <"$dir/cpio" >>"$dir/list"
    echo "$(basename "$m"): $(stat -c %s "$m") bytes, $(cpio -it --quiet <"$dir/cpio" | wc -l) entries" >>"$dir/members"
  done
  rm -f "$dir/cpio"
}

# Size, uncompressed size, entries, modules (*.ko, *.ko.xz|zst|gz under lib/modules/) and
# firmware (regular files under lib/firmware/) of the initrd IMG listed in DIR by
# initrd_listing, as one line for NAME; with a fourth argument "largest", also its ten largest
# paths.
initrd_report() {
  local name=$1 img=$2 dir=$3 largest=${4:-}
  python3 - "$name" "$img" "$dir" "$largest" <<'PY'
import os, re, sys
name, img, d, largest = sys.argv[1:]
members = int(open(f"{d}/count").read())
raw = sum(int(x) for x in open(f"{d}/bytes").read().split())
entries = []
for line in open(f"{d}/list"):
    f = line.split(None, 8)
    if f[0][0] != "-":  # device nodes show "major, minor" where files show a size
        entries.append((f[0][0], 0, ""))
        continue
    entries.append(("-", int(f[4]), f[8].rstrip("\n")))
files = [e for e in entries if e[0] == "-"]
modules = [s for t, s, p in files if "lib/modules/" in p and re.search(r"\.ko(\.(xz|zst|gz))?$", p)]
firmware = [s for t, s, p in files if "lib/firmware/" in p]
print(f"{name}: {os.path.getsize(img)} bytes ({members} member(s): {'; '.join(open(f'{d}/members').read().splitlines())}),"
      f" {raw} bytes of cpio, {len(entries)} entries, {len(files)} regular files;"
      f" modules {len(modules)} .ko* files, {sum(modules)} bytes;"
      f" firmware {len(firmware)} files, {sum(firmware)} bytes;"
      f" everything else {sum(s for t, s, p in files) - sum(modules) - sum(firmware)} bytes")
if largest:
    print(f"  ten largest paths of {name}:")
    for t, s, p in sorted(files, key=lambda e: -e[1])[:10]:
        print(f"    {s:>10}  {p}")
PY
}

# Boot $out/vmlinuz with INITRD and the command line APPEND under qemu (TCG, 1 GiB, qemu's
# default NIC), the disk given by the -drive value DRIVE, until the machine powers off or
# BOOT_TIMEOUT (default 300) seconds pass. The console goes to LOG, each line prefixed with
# the wall seconds since qemu was launched. MARKER is a regular expression whose first group is
# the kernel's uptime in seconds (the clock of its printk timestamps); prints "UPTIME WALL"
# for the first line that matches it, or fails when none does. QEMU_EXTRA: more qemu
# arguments (split at spaces).
qemu_boot() {
  local initrd=$1 drive=$2 append=$3 marker=$4 log=$5
  python3 - "$marker" "$log" "${BOOT_TIMEOUT:-300}" "$out/vmlinuz" "$initrd" "$drive" "$append" "${QEMU_EXTRA:-}" <<'PY'
import re, subprocess, sys, time
marker, log, timeout, kernel, initrd, drive, append, extra = sys.argv[1:]
argv = ["timeout", timeout, "qemu-system-x86_64", "-m", "1024", "-nographic", "-no-reboot",
        "-kernel", kernel, "-initrd", initrd, "-drive", drive, "-append", append] + extra.split()
start = time.monotonic()
wall = uptime = None
with open(log, "w") as out:
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for raw in p.stdout:
        now = time.monotonic() - start
        line = raw.decode(errors="replace").rstrip("\r\n")
        out.write(f"{now:8.3f} {line}\n")
        m = re.search(marker, line)
        if m and wall is None:
            wall, uptime = now, float(m.group(1))
    p.wait()
if wall is None:
    sys.exit(f"the marker never appeared (qemu exit {p.returncode}); console in {log}")
print(f"{uptime:.2f} {wall:.2f}")
PY
}
