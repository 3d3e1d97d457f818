#!/usr/bin/env bash
# strata's initrd against trixie's `mkinitramfs` (initramfs-tools with its defaults and
# Recommends: MODULES=most, zstd, busybox) for the same kernel version: size, uncompressed
# size, entry count, the ten largest paths of each, and the time from kernel start to the end
# of the real trixie root's boot under qemu (TCG) with the same kernel (strata's vmlinuz), the
# same root disk (the e2e tests' real root, as bench/boot.sh boots it; opened with
# snapshot=on) and the same command line. bench/boot.sh cuts the same boot into phases.
#
# Usage: bench/mkinitramfs.sh
# Run as root (rootful podman). BOOTS (default 3) boots per initrd; BOOT_TIMEOUT (default
# 300) seconds per boot. See bench/common.sh for STRATA_BENCH_DIR, STRATA and STRATA_CI_CACHE.
#
# Timing, both printed per boot:
#   kernel clock: /proc/uptime as read by the root's marker unit when the root's boot has
#                 finished, printed in the marker line (seconds since the kernel started,
#                 the clock of the kernel's printk timestamps); also the printk timestamp of
#                 "Run /init as init process".
#   wall:         seconds from launching qemu to the marker line on the serial console
#                 (adds qemu start-up, firmware and loading kernel + initrd).
set -euo pipefail
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"

boots=${BOOTS:-3}
need podman qemu-system-x86_64 zstd cpio python3 timeout
[ "$(id -u)" = 0 ] || die "run as root (rootful podman, a bind mount for the container's output)"
[ "$boots" -eq 0 ] || find_real_root_disk
find_strata
ensure_build
version=$(kernel_version)
ensure_mkinitramfs "$version"
bench=$mki_dir
rm -rf "$bench"/{strata,mki} "$bench"/console-* "$bench"/boots "$bench"/root.img

step "size and entries"
initrd_listing "$out/initrd.cpio.zst" "$bench/strata"
initrd_listing "$bench/mkinitramfs.img" "$bench/mki"
initrd_report strata "$out/initrd.cpio.zst" "$bench/strata" largest
initrd_report mkinitramfs "$bench/mkinitramfs.img" "$bench/mki" largest

# Boot once; print "kernel-clock-marker run-init wall" (seconds) on stdout, the console in LOG.
boot() {
  local initrd=$1 log=$2 r ri
  r=$(qemu_boot "$initrd" "file=$bench/root.img,if=virtio,format=raw,snapshot=on" "$append" \
    "$root_marker" "$log") || return 1
  ri=$(sed -n 's/.*\[ *\([0-9.]*\)\] Run \/init as init process.*/\1/p' "$log" | head -n 1)
  read -r up wall <<<"$r"
  printf '%s %.2f %s\n' "$up" "${ri:-nan}" "$wall"
}

[ "$boots" -gt 0 ] || exit 0
keep_real_root_disk "$bench/root.img"
step "boots under qemu (TCG), $boots per initrd, alternating: $append"
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
    print(f"{name}: kernel start → the real root's boot finished: mean {up:.2f} s kernel clock"
          f" (min {min(r[0] for r in rs):.2f}, max {max(r[0] for r in rs):.2f}, {len(rs)} boots);"
          f" /init started at {ri:.2f} s; {wall:.2f} s wall from launching qemu")
print(f"ratio strata/mkinitramfs (kernel clock): {means['strata'] / means['mkinitramfs']:.2f}")
PY
