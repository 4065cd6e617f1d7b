#!/usr/bin/env bash
# Image cache benchmark: start time of a 1 GiB image (SKIFF_BENCH_IMAGE_MB)
# pulled cold, versus from a Ready image cache, versus a small image, with
# `podman pull` of the same image from the same registry as the peer.
# Writes out/bench-image.json and out/bench-image.svg. Needs root (real
# sandboxes); installs docker-registry and podman when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
mkdir -p out
export SKIFF_BENCH_OUT="${SKIFF_BENCH_OUT:-$PWD/out}"
go build -o bin/skiff ./cmd/skiff
SKIFF_BIN="$PWD/bin/skiff" go test ./tests/images/ -run '^$' -bench 'ImageCacheStart' -benchtime 1x -timeout 30m -v "$@" 2>&1 |
	grep -v '^        [0-9.]* - - \[\|^        time=' 
echo "bench-image: $SKIFF_BENCH_OUT/bench-image.json, $SKIFF_BENCH_OUT/bench-image.svg"
