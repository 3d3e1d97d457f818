#!/bin/sh
# Benchmark a whole signed sysext: strata (directory → squashfs → verity → PKCS#7 → GPT, the
# `sysext_bench` example) against the reference tool chains on the same tree, squashfs with
# zstd level 15 and 128 KiB blocks everywhere:
#   - mksquashfs + veritysetup format on the host (bookworm): file system and hash tree
#     only, no signature and no GPT, so a lower bound for the tools;
#   - systemd-repart 257 (trixie) --offline in a podman container, definitions as mkosi's
#     sysext (root squashfs + root-verity + root-verity-sig): the same product as strata's.
#     A no-op `podman run` of the same image is timed too, to show the container overhead.
#
# Usage: bench/sysext.sh [SRC_DIR]
# SRC_DIR is the extension root (holding usr/). Without it, a copy of /usr/bin under
# $TMPDIR/strata-sysext-bench/tree/usr is used. RUNS and WARMUP set hyperfine's counts (3, 1).
# Needs: cargo, hyperfine, mksquashfs, veritysetup, openssl, podman, python3, and the local
# base image docker.io/library/debian:trixie (ci/setup.sh; nothing is pulled).
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${TMPDIR:-/tmp}/strata-sysext-bench
mkdir -p "$work"

for tool in cargo hyperfine mksquashfs veritysetup openssl podman python3 sha256sum; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done

if [ $# -ge 1 ]; then
    src=$(cd "$1" && pwd)
else
    src=$work/tree
    if [ ! -d "$src" ]; then
        mkdir -p "$src/usr"
        cp -a /usr/bin "$src/usr/"
    fi
fi

cargo build --quiet --release --manifest-path "$repo/Cargo.toml" -p strata-format --example sysext_bench
target_dir=$(cargo metadata --quiet --format-version 1 --manifest-path "$repo/Cargo.toml" \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bench=$target_dir/release/examples/sysext_bench

if [ ! -f "$work/sysext.key" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/sysext.key" -out "$work/sysext.crt" \
        -subj /CN=strata-bench -days 3650 2>/dev/null
fi

# The repart container: built once per Containerfile text.
containerfile='FROM docker.io/library/debian:trixie
RUN apt-get update \
 && apt-get install -y --no-install-recommends systemd-repart squashfs-tools libcryptsetup12 \
 && rm -rf /var/lib/apt/lists/*
'
tag=localhost/strata-bench-repart:$(printf '%s' "$containerfile" | sha256sum | cut -c1-16)
if ! podman image exists "$tag"; then
    mkdir -p "$work/context"
    printf '%s' "$containerfile" > "$work/context/Containerfile"
    podman build --pull=never --network=host -t "$tag" "$work/context" >&2
fi

mkdir -p "$work/repart.d"
printf '[Partition]\nType=root\nFormat=squashfs\nCopyFiles=/usr/\nVerity=data\nVerityMatchKey=root\nMinimize=best\nCompression=zstd\nCompressionLevel=15\n' \
    > "$work/repart.d/10-root.conf"
printf '[Partition]\nType=root-verity\nVerity=hash\nVerityMatchKey=root\nMinimize=best\n' \
    > "$work/repart.d/20-root-verity.conf"
printf '[Partition]\nType=root-verity-sig\nVerity=signature\nVerityMatchKey=root\n' \
    > "$work/repart.d/30-root-verity-sig.conf"

run="podman run --rm --pull=never --network=none"
repart="rm -f $work/repart.raw && $run -v $src:/src:ro -v $work:/w $tag systemd-repart --definitions=/w/repart.d --copy-source=/src \
--empty=create --size=auto --seed=0b5a3f6c-1111-4222-8333-444455556666 --offline=yes \
--private-key=/w/sysext.key --certificate=/w/sysext.crt /w/repart.raw"

echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "tree: $src ($(du -sh "$src" | cut -f1)), zstd level 15, 128 KiB blocks, $(nproc) cores"
hyperfine --warmup "${WARMUP:-1}" --runs "${RUNS:-3}" --export-json "$work/hyperfine.json" \
    -n strata "$bench $src $work/strata.raw bench $work/sysext.key $work/sysext.crt" \
    -n mksquashfs+veritysetup "mksquashfs $src $work/mks.sqfs -comp zstd -Xcompression-level 15 -b 131072 -noappend -no-progress -quiet && veritysetup format $work/mks.sqfs $work/mks.hash" \
    -n systemd-repart "$repart >/dev/null" \
    -n podman-noop "$run $tag true"

echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$work" <<'PY'
import json, os, sys
work = sys.argv[1]
t = {r["command"]: r["mean"] for r in json.load(open(f"{work}/hyperfine.json"))["results"]}
s = t["strata"]
print(f"time: strata {s:.2f} s; mksquashfs+veritysetup {t['mksquashfs+veritysetup']:.2f} s "
      f"(strata/them {s / t['mksquashfs+veritysetup']:.2f}); systemd-repart {t['systemd-repart']:.2f} s "
      f"(strata/them {s / t['systemd-repart']:.2f}; without the {t['podman-noop']:.2f} s container start: "
      f"{s / (t['systemd-repart'] - t['podman-noop']):.2f})")
size = lambda f: os.path.getsize(f"{work}/{f}")
print(f"size: strata.raw {size('strata.raw')} bytes; mksquashfs {size('mks.sqfs')} + hash {size('mks.hash')} "
      f"= {size('mks.sqfs') + size('mks.hash')} bytes (no GPT, no signature); repart.raw {size('repart.raw')} bytes")
PY
