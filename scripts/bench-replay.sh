#!/usr/bin/env bash
# Replay benchmark: a synthetic, time-compressed daily create trace with
# spikes, played against a fresh `skiff up` per mode — no warm pool, a
# fixed pool, forecast-driven pools — comparing pool hit rate and
# create→Running latency on the last (measured) day. About ten minutes
# with the defaults. Writes out/bench-replay.json and out/bench-replay.svg.
# Needs root (real sandboxes). Extra arguments go to `skiff bench replay`
# (e.g. --day 1m --days 3 --scale 2 --seed 7 --modes none,forecast).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p out
out="${SKIFF_BENCH_OUT:-$PWD/out}"
go build -o bin/skiff ./cmd/skiff
img="$out/busybox-oci.tar"
[ -f "$img" ] || scripts/build-test-image.sh "$img" >/dev/null
echo "load before: $(uptime)"
bin/skiff bench replay --image-tar "$img" --out "$out/bench-replay.json" --svg "$out/bench-replay.svg" "$@"
echo "load after:  $(uptime)"
echo "bench-replay: $out/bench-replay.json, $out/bench-replay.svg"
