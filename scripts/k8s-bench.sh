#!/usr/bin/env bash
# k8s-bench.sh [N]: scale a Deployment on skiff's virtual node to N (default
# 500) replicas and time it until every pod is Ready, against the real
# kube-apiserver, controller-manager and scheduler on this machine (all
# started by tests/kube's harness, with real sandboxes). Needs root.
# Results: bench-results/k8s-scale.json (or $SKIFF_KUBE_BENCH_OUT).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
n="${1:-500}"
scripts/k8s-tools.sh >/dev/null
go build -o bin/skiff ./cmd/skiff
SKIFF_BIN="$root/bin/skiff" SKIFF_KUBE_BENCH="$n" \
	go test ./tests/kube/ -count=1 -run '^TestBenchScale$' -v -timeout 30m 2>&1 |
	grep -E '^(=== RUN|--- |PASS|FAIL|ok)|bench_test.go|^\s+"|^\s*[{}]' || true
cat "${SKIFF_KUBE_BENCH_OUT:-bench-results/k8s-scale.json}"
