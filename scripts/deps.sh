#!/usr/bin/env bash
# Installs the system packages the tests use, when missing. Idempotent.
set -euo pipefail
need=()
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
# Image pulls and caches: a real registry in the tests, podman as the benchmark's peer.
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
command -v podman >/dev/null 2>&1 || need+=(podman)
# NFS volumes: a real NFS server (ganesha, which registers with rpcbind) and
# libnfs's nfs-cp as the throughput peer.
command -v ganesha.nfsd >/dev/null 2>&1 || need+=(nfs-ganesha)
[ -e /usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so ] || ls /usr/lib/*/ganesha/libfsalvfs.so >/dev/null 2>&1 || need+=(nfs-ganesha-vfs)
command -v rpcbind >/dev/null 2>&1 || [ -x /usr/sbin/rpcbind ] || need+=(rpcbind)
command -v nfs-cp >/dev/null 2>&1 || need+=(libnfs-utils)
if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "${need[@]}" >/dev/null; }
fi
if [ "$(id -u)" != 0 ]; then
  echo "deps: warning: not root; the sandbox and integration tests need root and will be skipped" >&2
fi
echo "deps: ok"
