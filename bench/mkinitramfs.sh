#!/usr/bin/env bash
# strata's initrd against trixie's `mkinitramfs` (initramfs-tools with its defaults and
# Recommends: MODULES=most, zstd, busybox) for the same kernel version: size, uncompressed
# size, entry count, the ten largest paths of each, and the time from kernel start to the
# root file system's /sbin/init under qemu (TCG) with the same kernel (strata's vmlinuz), the
# same root disk and the same command line.
#
# Usage: bench/mkinitramfs.sh
# Run as root (rootful podman). BOOTS (default 3) boots per initrd; BOOT_TIMEOUT (default
# 300) seconds per boot. See bench/common.sh for STRATA_BENCH_DIR and STRATA.
#
# Timing, both printed per boot:
#   kernel clock: /proc/uptime as read by the root's /sbin/init, printed in the marker line
#                 (seconds since the kernel started, the clock of the kernel's printk
#                 timestamps); also the printk timestamp of "Run /init as init process".
#   wall:         seconds from launching qemu to the marker line on the serial console
#                 (adds qemu start-up, firmware and loading kernel + initrd).
set -euo pipefail
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"

image=docker.io/library/debian:trixie
marker=STRATA-BENCH-ROOT-REACHED
boots=${BOOTS:-3}
need podman qemu-system-x86_64 mke2fs zstd cpio python3 timeout
[ "$(id -u)" = 0 ] || die "run as root (rootful podman, a bind mount for the container's output)"
podman image exists "$image" || die "$image is not in podman's storage; run ci/setup.sh (no registry is reachable)"
find_strata
ensure_build
version=$(kernel_version)
bench=$work/mkinitramfs/$version
mkdir -p "$bench"
rm -rf "$bench"/{strata,mki,rootfs} "$bench"/console-* "$bench"/boots

step "mkinitramfs for $version in a trixie container"
# apt's defaults, Recommends included, as on an ordinary trixie system: initramfs-tools then
# brings zstd (its COMPRESS=zstd) and busybox (BUSYBOX=auto puts it in the image), the kernel
# brings firmware-linux-free. busybox-static, installed after mkinitramfs has run, is the shell
# of the benchmark's root disk. Kept per kernel version:
# delete $bench/done to run the container again.
[ -e "$bench/done" ] || podman run --rm --network=host -v "$bench:/out" -e "VER=$version" "$image" sh -euc '
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq initramfs-tools "linux-image-$VER" >/dev/null
  start=$(date +%s.%N)
  mkinitramfs -o /out/mkinitramfs.img "$VER"
  end=$(date +%s.%N)
  echo "$start $end" | awk "{ printf \"%.1f\n\", \$2 - \$1 }" >/out/mkinitramfs.seconds
  dpkg-query -W initramfs-tools klibc-utils busybox zstd firmware-linux-free "linux-image-$VER" >/out/versions
  grep -Ehv "^\s*(#|$)" /etc/initramfs-tools/initramfs.conf >/out/initramfs.conf
  apt-get install -y -qq --no-install-recommends busybox-static >/dev/null
  cp "$(command -v busybox)" /out/busybox
  touch /out/done
'
echo "in the container: $(tr '\n' ' ' <"$bench/versions")"
echo "initramfs.conf: $(tr '\n' ' ' <"$bench/initramfs.conf")"
echo "mkinitramfs ran for $(cat "$bench/mkinitramfs.seconds") s (inside the container, after apt)"

# One cpio -tv listing of all an initrd's members (uncompressed cpio or zstd).
listing() {
  local img=$1 dir=$2 m
  mkdir -p "$dir"
  split_initrd_members "$img" "$dir" >"$dir/count"
  : >"$dir/list"
  : >"$dir/bytes"
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

report() {
  local name=$1 img=$2 dir=$3
  python3 - "$name" "$img" "$dir" <<'PY'
import os, sys
name, img, d = sys.argv[1:]
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
mods = sum(s for t, s, p in files if "lib/modules/" in p)
fw = sum(s for t, s, p in files if "lib/firmware/" in p)
print(f"{name}: {os.path.getsize(img)} bytes ({members} member(s): {'; '.join(open(f'{d}/members').read().splitlines())}), {raw} bytes of cpio,"
      f" {len(entries)} entries, {len(files)} regular files;"
      f" modules {mods} bytes ({sum(1 for t, s, p in files if p.endswith(('.ko', '.ko.xz', '.ko.zst')))} .ko),"
      f" firmware {fw} bytes, everything else {sum(s for t, s, p in files) - mods - fw} bytes")
print(f"  ten largest paths of {name}:")
for t, s, p in sorted(files, key=lambda e: -e[1])[:10]:
    print(f"    {s:>10}  {p}")
PY
}

step "size and entries"
listing "$out/initrd.cpio.zst" "$bench/strata"
listing "$bench/mkinitramfs.img" "$bench/mki"
report strata "$out/initrd.cpio.zst" "$bench/strata"
report mkinitramfs "$bench/mkinitramfs.img" "$bench/mki"

step "root disk"
tree=$bench/rootfs
mkdir -p "$tree"/{bin,sbin,etc,proc,sys,dev,run,tmp}
install -m 0755 "$bench/busybox" "$tree/bin/busybox"
cat >"$tree/sbin/init" <<EOF
#!/bin/busybox sh
[ -e /proc/uptime ] || /bin/busybox mount -t proc proc /proc
[ -c /dev/console ] || /bin/busybox mount -t devtmpfs devtmpfs /dev
exec >/dev/console 2>&1
read up idle </proc/uptime
echo "$marker uptime=\$up"
/bin/busybox sync
/bin/busybox poweroff -f
EOF
chmod 0755 "$tree/sbin/init"
printf 'ID=strata-bench\nNAME="strata bench root"\n' >"$tree/etc/os-release"
mke2fs -q -F -t ext4 -d "$tree" "$bench/root.img" 32M

# Boot once; print "kernel-clock-marker run-init wall" (seconds) on stdout, the console in LOG.
boot() {
  local initrd=$1 log=$2
  # A fresh copy per boot: the root is mounted rw and powered off without unmounting.
  cp "$bench/root.img" "$bench/boot.img"
  python3 - "$marker" "$log" "${BOOT_TIMEOUT:-300}" "$out/vmlinuz" "$initrd" "$bench/boot.img" <<'PY'
import re, subprocess, sys, time
marker, log, timeout, kernel, initrd, disk = sys.argv[1:]
argv = ["timeout", timeout, "qemu-system-x86_64", "-m", "1024", "-nographic", "-no-reboot",
        "-kernel", kernel, "-initrd", initrd, "-drive", f"file={disk},if=virtio,format=raw",
        "-append", "console=ttyS0 panic=-1 systemd.show_status=1 root=/dev/vda rw"]
start = time.monotonic()
wall = uptime = run_init = None
with open(log, "w") as out:
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for raw in p.stdout:
        now = time.monotonic() - start
        line = raw.decode(errors="replace").rstrip("\r\n")
        out.write(f"{now:8.3f} {line}\n")
        m = re.search(r"\[\s*([0-9.]+)\] Run /init as init process", line)
        if m:
            run_init = float(m.group(1))
        m = re.search(marker + r" uptime=([0-9.]+)", line)
        if m and wall is None:
            wall, uptime = now, float(m.group(1))
    p.wait()
if wall is None:
    sys.exit(f"the marker never appeared (qemu exit {p.returncode}); console in {log}")
print(f"{uptime:.2f} {run_init if run_init is not None else float('nan'):.2f} {wall:.2f}")
PY
}

[ "$boots" -gt 0 ] || exit 0
step "boots under qemu (TCG), $boots per initrd, alternating"
: >"$bench/boots"
for i in $(seq 1 "$boots"); do
  for name in strata mkinitramfs; do
    case $name in
      strata) initrd=$out/initrd.cpio.zst ;;
      mkinitramfs) initrd=$bench/mkinitramfs.img ;;
    esac
    r=$(boot "$initrd" "$bench/console-$name-$i.log") || die "boot $i of the $name initrd failed"
    echo "$name $r" >>"$bench/boots"
    read -r up ri wall <<<"$r"
    echo "boot $i, $name: marker at $up s kernel clock (/init started at $ri s), $wall s wall"
  done
done
python3 - "$bench/boots" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, up, ri, wall = line.split()
    rows.setdefault(name, []).append((float(up), float(ri), float(wall)))
means = {}
for name, rs in rows.items():
    up, ri, wall = (statistics.mean(c) for c in zip(*rs))
    means[name] = up
    print(f"{name}: kernel start → root's /sbin/init: mean {up:.2f} s kernel clock"
          f" (min {min(r[0] for r in rs):.2f}, max {max(r[0] for r in rs):.2f}, {len(rs)} boots);"
          f" /init started at {ri:.2f} s; {wall:.2f} s wall from launching qemu")
print(f"ratio strata/mkinitramfs (kernel clock): {means['strata'] / means['mkinitramfs']:.2f}")
PY
