#!/usr/bin/env bash
# strata's initrd against trixie's `mkinitramfs` (initramfs-tools, MODULES=most; made by
# common.sh's ensure_mkinitramfs) booting the same real Debian root: the trixie system the e2e
# tests make (tests/e2e/real_root.rs: systemd as PID 1 on ext4, UUID 5a7a0c1e-…-000000000001),
# with the same kernel (strata's vmlinuz), the same disk (opened with snapshot=on, so never
# written) and the same command line. The root's marker unit waits until the boot has
# finished, prints `systemd-analyze time` (STRATA-ANALYZE) and its marker (STRATA-ROOT
# uptime=…), and powers off.
#
# Usage: bench/boot.sh
# Run as root (rootful podman for mkinitramfs). BOOTS (default 3) boots per initrd,
# alternating; ICOUNT_BOOTS (default 1) instruction-counted boots per initrd after those (see
# below); BOOT_TIMEOUT (default 300) seconds per boot; STRATA_CI_CACHE (default
# /var/cache/strata-ci) where the tests cache the root disk. See bench/common.sh for
# STRATA_BENCH_DIR and STRATA.
#
# Printed per boot:
#   marker:  /proc/uptime when the root's marker ran: seconds since the kernel started (the
#            clock of the kernel's printk timestamps). Medians and the ratio use this.
#   wall:    seconds from launching qemu to the marker line on the serial console.
#   analyze: the root's `systemd-analyze time` split (kernel, initrd, userspace). With
#            initramfs-tools (no systemd in the initrd) the root's systemd counts the whole
#            initrd as "kernel".
#   milestones: kernel-clock times on the console: the initrd unpacked ("Freeing initrd
#            memory") and /init started (printk); the initrd's
#            systemd has loaded its units ("Queued start job"); udevd started and the
#            initrd's coldplug (systemd-udev-trigger) finished (status lines, which have no
#            printk timestamp: the last printk timestamp before them plus the wall time
#            since); virtio_blk found vda, the root's ext4 mounted, the root's systemd
#            started (printk). A milestone missing from a console shows as "-".
# Then the medians, the boot cut into phases between the milestones both have, the ratio
# strata/mkinitramfs of the marker uptime, and each initrd's size (compressed and
# uncompressed), module (*.ko*) and firmware file counts.
set -euo pipefail
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"

boots=${BOOTS:-3}
need podman qemu-system-x86_64 zstd cpio python3 timeout
[ "$boots" -gt 0 ] || die "BOOTS=$boots: nothing to measure"
[ "$(id -u)" = 0 ] || die "run as root (rootful podman, a bind mount for the container's output)"
find_real_root_disk

find_strata
ensure_build
version=$(kernel_version)
ensure_mkinitramfs "$version"
res=$work/boot/$version
rm -rf "$res"
mkdir -p "$res"
keep_real_root_disk "$res/root.img"

step "boots under qemu (TCG), $boots per initrd, alternating: $append"
for i in $(seq 1 "$boots"); do
  for name in strata mkinitramfs; do
    case $name in
      strata) initrd=$out/initrd.cpio.zst ;;
      mkinitramfs) initrd=$mki_dir/mkinitramfs.img ;;
    esac
    log=$res/console-$name-$i.log
    r=$(qemu_boot "$initrd" "file=$res/root.img,if=virtio,format=raw,snapshot=on" "$append" \
      "$root_marker" "$log") || die "boot $i of the $name initrd failed"
    python3 - "$name" "$i" "$r" "$log" "$res/boots.jsonl" <<'PY'
import json, re, sys
name, i, r, log, rows = sys.argv[1:]
uptime, wall = (float(x) for x in r.split())
# (wall seconds, printk timestamp or None, text) per console line; a line without a printk
# timestamp (systemd's status lines, initramfs-tools' messages) gets the kernel clock of the
# last printk line before it plus the wall time since that line.
lines, clock, last_printk = [], None, None
for raw in open(log).read().splitlines():
    w, _, text = raw.strip().partition(" ")
    m = re.search(r"\[\s*([0-9]+\.[0-9]+)\] (.*)", text)
    if m:
        last_printk = (float(w), float(m.group(1)))
        lines.append((float(m.group(1)), m.group(2)))
    else:
        est = last_printk[1] + float(w) - last_printk[0] if last_printk else None
        lines.append((est, text))
console = [t for _, t in lines]

def find(pattern, which=0, before=None):
    """(index, kernel clock) of the first (which=0) or last (-1) line that matches."""
    hits = [(i, t) for i, (t, text) in enumerate(lines[:before]) if t is not None and re.search(pattern, text)]
    return hits[which] if hits else (None, None)

# The root's systemd: the last "systemd NNN running" (strata's initrd has a first one).
root_pid1, root_pid1_at = find(r"systemd\[1\]: systemd [0-9][^ ]* running", -1)
milestones = {
    "unpacked": find(r"Freeing initrd memory")[1],
    "/init": find(r"Run /init as init process")[1],
    "units loaded": find(r"systemd\[1\]: Queued start job for default target", before=root_pid1)[1],
    "udevd": find(r"Started .*systemd-udevd\.service|Starting systemd-udevd version")[1],
    "coldplug done": find(r"Finished .*systemd-udev-trigger\.service", before=root_pid1)[1],
    "vda": find(r"virtio_blk virtio[0-9]+: \[vda\]")[1],
    "root mounted": find(r"EXT4-fs \(vda1\): mounted filesystem")[1],
    "root's systemd": root_pid1_at,
}

def seconds(text):
    """systemd's time span ("1min 2.345s", "850ms", "3.2s") in seconds."""
    total = 0.0
    for value, unit in re.findall(r"([0-9.]+)(min|ms|us|s)", text):
        total += float(value) * {"min": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
    return total

analyze_line = next((l.split("STRATA-ANALYZE ", 1)[1] for l in console if "STRATA-ANALYZE Startup" in l), None)
analyze = {}
if analyze_line:
    for span, part in re.findall(r"((?:[0-9.]+(?:min|ms|us|s) ?)+) \((\w+)\)", analyze_line):
        analyze[part] = seconds(span)
marker = next(l for l in console if re.search(r"STRATA-ROOT uptime=[0-9]", l))
fields = dict(w.split("=", 1) for w in marker.split() if "=" in w)
row = {"name": name, "uptime": uptime, "wall": wall, "analyze": analyze, "milestones": milestones,
       "state": fields.get("state"), "failed": fields.get("failed"), "source": fields.get("source")}
with open(rows, "a") as f:
    f.write(json.dumps(row) + "\n")
fmt = lambda v: "-" if v is None else f"{v:.2f}"
print(f"boot {i}, {name}: marker at {uptime:.2f} s kernel clock, {wall:.2f} s wall;"
      f" root {row['source']} state={row['state']} failed={row['failed']}")
print(f"  analyze: {analyze_line or '(no STRATA-ANALYZE line)'}")
print("  milestones: " + ", ".join(f"{k} {fmt(v)}" for k, v in milestones.items()))
PY
  done
done

step "medians"
python3 - "$res/boots.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = {}
fmt = lambda v: "-" if v is None else f"{v:.2f}"
for name in ("strata", "mkinitramfs"):
    rs = [r for r in rows if r["name"] == name]
    med[name] = statistics.median(r["uptime"] for r in rs)
    def m(get):
        vals = [v for v in (get(r) for r in rs) if v is not None]
        return statistics.median(vals) if vals else None
    each = ", ".join(f"{r['uptime']:.2f}" for r in rs)
    print(f"{name}: kernel start → root's marker: median {med[name]:.2f} s kernel clock"
          f" ({each}); median wall {m(lambda r: r['wall']):.2f} s")
    print("  analyze medians: " + ", ".join(
        f"{part} {fmt(m(lambda r, p=part: r['analyze'].get(p)))}" for part in ("kernel", "initrd", "userspace")))
    print("  milestone medians: " + ", ".join(
        f"{k} {fmt(m(lambda r, k=k: r['milestones'][k]))}" for k in rs[0]["milestones"]))
# The same boot cut into phases between milestones both consoles have, medians of each boot's.
cuts = ["/init", "vda", "root mounted", "root's systemd"]
print("phases (median seconds, kernel clock): " + "; ".join(
    f"{a} → {b}" for a, b in zip(["kernel start"] + cuts, cuts + ["marker"])))
for name in ("strata", "mkinitramfs"):
    rs = [r for r in rows if r["name"] == name]
    spans = []
    for a, b in zip([None] + cuts, cuts + [None]):
        vals = []
        for r in rs:
            t0 = 0.0 if a is None else r["milestones"][a]
            t1 = r["uptime"] if b is None else r["milestones"][b]
            if t0 is not None and t1 is not None:
                vals.append(t1 - t0)
        spans.append(fmt(statistics.median(vals) if vals else None))
    print(f"  {name}: " + " | ".join(spans))
print(f"ratio strata/mkinitramfs (median marker uptime): {med['strata'] / med['mkinitramfs']:.2f}")
PY

# Host load moves every figure above (TCG shares the host's cores). With -icount the guest's
# clock counts executed instructions instead (shift=1: 2 ns each), and sleep=off jumps it over
# idle time, so until the first disk read the kernel clock measures work, whatever the host
# does. After that, the jumps over time spent waiting for the disk depend on the host again:
# only `/init` → vda is compared.
step "work from /init to the root disk, instruction-counted (qemu -icount shift=1,sleep=off), ${ICOUNT_BOOTS:-1} boot(s) each"
for i in $(seq 1 "${ICOUNT_BOOTS:-1}"); do
  for name in strata mkinitramfs; do
    case $name in
      strata) initrd=$out/initrd.cpio.zst ;;
      mkinitramfs) initrd=$mki_dir/mkinitramfs.img ;;
    esac
    log=$res/console-icount-$name-$i.log
    QEMU_EXTRA="-icount shift=1,sleep=off" qemu_boot "$initrd" \
      "file=$res/root.img,if=virtio,format=raw,snapshot=on" "$append" \
      "$root_marker" "$log" >/dev/null || die "icount boot $i of the $name initrd failed"
    python3 - "$name" "$log" "$res/icount.jsonl" <<'PY'
import json, re, sys
name, log, rows = sys.argv[1:]
text = open(log).read()
def at(pattern):
    m = re.search(r"\[\s*([0-9]+\.[0-9]+)\] " + pattern, text)
    if not m:
        sys.exit(f"{log}: no line matching {pattern!r}")
    return float(m.group(1))
init, vda = at(r"Run /init as init process"), at(r"virtio_blk virtio[0-9]+: \[vda\]")
with open(rows, "a") as f:
    f.write(json.dumps({"name": name, "init": init, "vda": vda}) + "\n")
print(f"{name}: /init at {init:.2f} s, vda at {vda:.2f} s: /init → vda {vda - init:.2f} s (instruction-counted)")
PY
  done
done
python3 - "$res/icount.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = {n: statistics.median(r["vda"] - r["init"] for r in rows if r["name"] == n) for n in ("strata", "mkinitramfs")}
print(f"/init → vda, instruction-counted medians: strata {med['strata']:.2f} s, mkinitramfs {med['mkinitramfs']:.2f} s,"
      f" ratio {med['strata'] / med['mkinitramfs']:.2f}")
PY

step "sizes"
initrd_listing "$out/initrd.cpio.zst" "$res/strata"
initrd_listing "$mki_dir/mkinitramfs.img" "$res/mki"
initrd_report strata "$out/initrd.cpio.zst" "$res/strata"
initrd_report mkinitramfs "$mki_dir/mkinitramfs.img" "$res/mki"
echo "consoles: $res/console-*.log"
