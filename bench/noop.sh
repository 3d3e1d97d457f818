#!/usr/bin/env bash
# No-op rebuild: with a warm cache, how long does a second `strata build` of the default
# layer set take (goal: at most 1 s wall), and does it leave the container engine alone?
#
# Usage: bench/noop.sh
# The first build (minutes from an empty cache) is not timed. See bench/common.sh for
# STRATA_BENCH_DIR, STRATA, RUNS (default 10) and WARMUP (default 1).
set -euo pipefail
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"

need hyperfine python3 sha256sum
find_strata
ensure_build
bench=$work/noop
rm -rf "$bench"
mkdir -p "$bench"
before=$(cd "$out" && sha256sum initrd.cpio.zst vmlinuz products.json)

step "no-op rebuild, timed"
hyperfine --warmup "${WARMUP:-1}" --runs "${RUNS:-10}" --export-json "$bench/noop.json" \
  -n "strata build (no-op)" "$strata build $layers -o $out --cache-dir $cache"
python3 - "$bench/noop.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
verdict = "meets" if r["mean"] <= 1.0 else "misses"
print(f"no-op rebuild: mean {r['mean']:.3f} ± {r['stddev']:.3f} s (min {r['min']:.3f}, max {r['max']:.3f},"
      f" {len(r['times'])} runs); {verdict} the 1 s goal")
PY

step "no-op rebuild with no container engine reachable"
# An explicitly named socket that does not answer is an error for strata (it only starts its
# own `podman system service` when no socket is named), so a build that needed the engine
# would fail here.
CONTAINER_HOST=unix:///nonexistent DOCKER_HOST=unix:///nonexistent \
  "$strata" build "$layers" -o "$out" --cache-dir "$cache" >/dev/null 2>"$bench/noengine.log" ||
  { cat "$bench/noengine.log" >&2; die "the no-op rebuild failed without a container engine"; }
after=$(cd "$out" && sha256sum initrd.cpio.zst vmlinuz products.json)
[ "$before" = "$after" ] || die "the no-op rebuilds changed the products:"$'\n'"$before"$'\n'"$after"
echo "CONTAINER_HOST=unix:///nonexistent: the no-op rebuild succeeded; products byte-identical to the first build's"

# The control: the same environment with an empty cache must fail at the engine, so the
# success above is not an engine quietly found some other way.
if CONTAINER_HOST=unix:///nonexistent DOCKER_HOST=unix:///nonexistent \
  "$strata" build "$layers" -o "$bench/control-out" --cache-dir "$bench/control-cache" >/dev/null 2>"$bench/control.log"; then
  die "control: a build from an empty cache succeeded with CONTAINER_HOST=unix:///nonexistent"
fi
echo "control: from an empty cache, the same build fails: $(grep -m1 'error:' "$bench/control.log")"
