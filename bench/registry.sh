#!/usr/bin/env bash
# Registry throughput: strata's client (examples/registry_bench.rs) against `skopeo copy`,
# pushing and pulling the same amount of layer data to and from the same loopback registry
# (ci/registry.sh start), then a second push of unchanged content (must upload 0 bytes).
#
# Usage: bench/registry.sh [LAYERS] [MIB_PER_LAYER] [RUNS]      (default 4 32 3)
# Each run uses fresh random layers for each tool, so neither the registry nor skopeo's
# blob-info cache can skip or mount an upload.
set -euo pipefail
layers=${1:-4}
mib=${2:-32}
runs=${3:-3}
reg=${STRATA_BENCH_REGISTRY:-127.0.0.1:5000}
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}

die() { echo "error: $*" >&2; exit 1; }
command -v skopeo >/dev/null || die "skopeo is not installed (apt-get install skopeo)"
curl -fsS "http://$reg/v2/" >/dev/null || die "no registry answers on http://$reg/v2/; run ci/registry.sh start"

(cd "$root" && cargo build --quiet --release --example registry_bench)
bin=$target/release/examples/registry_bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

now() { date +%s.%N; }
add() { awk -v a="$1" -v b="$2" -v c="$3" 'BEGIN { printf "%.3f", a + (c - b) }'; }
field() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" "$2"; }

stamp=$(date +%s)-$$
strata_push=0 skopeo_push=0 strata_pull=0 skopeo_pull=0 strata_second=0 skopeo_second=0
for i in $(seq 1 "$runs"); do
  "$bin" make "$work/s$i" set "$layers" "$mib" $((2 * i))
  "$bin" make "$work/k$i" set "$layers" "$mib" $((2 * i + 1))
  ours=$reg/bench/strata-$stamp-$i:set
  theirs=$reg/bench/skopeo-$stamp-$i:set

  t0=$(now); "$bin" push "$work/s$i" set "$ours" >"$work/push-$i.json"; t1=$(now)
  strata_push=$(add "$strata_push" "$t0" "$t1")
  t0=$(now); skopeo copy --quiet --all --dest-tls-verify=false "oci:$work/k$i:set" "docker://$theirs"; t1=$(now)
  skopeo_push=$(add "$skopeo_push" "$t0" "$t1")

  # Both pull the same content (what strata pushed) into empty stores.
  t0=$(now); "$bin" pull "$ours" "$work/ps$i" set >"$work/pull-$i.json"; t1=$(now)
  strata_pull=$(add "$strata_pull" "$t0" "$t1")
  t0=$(now); skopeo copy --quiet --all --src-tls-verify=false "docker://$ours" "oci:$work/pk$i:set"; t1=$(now)
  skopeo_pull=$(add "$skopeo_pull" "$t0" "$t1")

  # A second push of unchanged content.
  t0=$(now); "$bin" push "$work/s$i" set "$ours" >"$work/second-$i.json"; t1=$(now)
  strata_second=$(add "$strata_second" "$t0" "$t1")
  t0=$(now); skopeo copy --quiet --all --dest-tls-verify=false "oci:$work/k$i:set" "docker://$theirs"; t1=$(now)
  skopeo_second=$(add "$skopeo_second" "$t0" "$t1")

  first=$(field bytes_transferred "$work/push-$i.json")
  second=$(field bytes_transferred "$work/second-$i.json")
  skipped=$(field blobs_skipped "$work/second-$i.json")
  pulled=$(field bytes_transferred "$work/pull-$i.json")
  echo "run $i: strata first push uploaded $first bytes; pull received $pulled bytes; second push uploaded $second bytes ($skipped blobs skipped)"
  [ "$second" = 0 ] || die "the second push uploaded $second bytes"
  rm -rf "$work/s$i" "$work/k$i" "$work/ps$i" "$work/pk$i"
done

total_mib=$((layers * mib * runs))
awk -v mib="$total_mib" -v sp="$strata_push" -v kp="$skopeo_push" -v sl="$strata_pull" -v kl="$skopeo_pull" \
    -v s2="$strata_second" -v k2="$skopeo_second" -v runs="$runs" 'BEGIN {
  printf "%d runs x %s MiB of layers on %s\n", runs, mib / runs, "'"$reg"'"
  printf "%-12s %10s %10s %12s %12s %8s\n", "", "strata s", "skopeo s", "strata MiB/s", "skopeo MiB/s", "ratio"
  printf "%-12s %10.2f %10.2f %12.1f %12.1f %7.2fx\n", "push", sp, kp, mib / sp, mib / kp, kp / sp
  printf "%-12s %10.2f %10.2f %12.1f %12.1f %7.2fx\n", "pull", sl, kl, mib / sl, mib / kl, kl / sl
  printf "%-12s %10.2f %10.2f %12s %12s %7.2fx\n", "second push", s2, k2, "-", "-", k2 / s2
  print "ratio = skopeo time / strata time (above 1.0: strata is faster)"
}'
