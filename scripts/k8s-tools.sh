#!/usr/bin/env bash
# Builds the real Kubernetes binaries skiff's virtual-node tests run against:
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl, from
# the tools/k8s module (which pins k8s.io/kubernetes and its staging modules).
#
# Idempotent and cached by version: the binaries land in
#   ${SKIFF_K8S_CACHE:-/var/cache/skiff-k8s}/<version>-<go.sum hash>/
# and a second run with the same tools/k8s/go.mod + go.sum does nothing.
# Prints the binary directory on its last line of stdout.
#
#   scripts/k8s-tools.sh            build (or reuse) and print the directory
#   scripts/k8s-tools.sh --print    print the directory; exit 1 if not built
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
mod="$root/tools/k8s"
cache="${SKIFF_K8S_CACHE:-/var/cache/skiff-k8s}"
version="$(awk '($1=="k8s.io/kubernetes" || $2=="k8s.io/kubernetes") && $0 !~ /=>/ {print ($1=="require") ? $3 : $2; exit}' "$mod/go.mod")"
hash="$(cat "$mod/go.mod" "$mod/go.sum" 2>/dev/null | sha256sum | cut -c1-12)"
dir="$cache/$version-$hash"
tools=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

built() {
	local t
	for t in "${tools[@]}"; do [[ -x "$dir/$t" ]] || return 1; done
}

if [[ "${1:-}" == "--print" ]]; then
	built || { echo "k8s tools $version not built in $dir (run scripts/k8s-tools.sh)" >&2; exit 1; }
	echo "$dir"; exit 0
fi
if built; then echo "$dir"; exit 0; fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9                      # one builder at a time; the others wait and reuse
if built; then echo "$dir"; exit 0; fi

echo "building k8s tools $version into $dir (several minutes on 2 cores)…" >&2
tmp="$dir.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
cd "$mod"
[[ -s go.sum ]] || go mod download >&2
# One go build for all four mains so that shared packages compile once.
# -trimpath and no DWARF keep the binaries small; CGO is off (pure Go).
CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags='-s -w' -o "$tmp/" \
	./kube-apiserver ./kube-controller-manager ./kube-scheduler ./kubectl >&2
rm -rf "$dir"; mv "$tmp" "$dir"
ln -sfn "$dir" "$cache/current"
echo "$dir"
