#!/usr/bin/env bash
# After the suite: nothing skiff-made may be left on the machine.
set -uo pipefail
bad=0
# Sandboxes leave nsfs (pinned namespaces), overlay and tmpfs mounts behind
# when they leak; the host itself has none of those under a data dir.
# The runtime's pin namespace (a mount namespace pinned at
# <state dir>/pins/mnt, root field "mnt:[...]", on a private bind mount of
# <state dir>/pins) is looked into below instead.
pinns=$(awk '$4 ~ /^mnt:\[/ && $9 == "nsfs" {print $5}' /proc/self/mountinfo)
m=$(grep -E ' - (nsfs|overlay) |/sandboxes/|skiff' /proc/self/mountinfo | awk '$4 !~ /^mnt:\[/' || true)
for p in $pinns; do
  m=$(echo "$m" | awk -v d="${p%/mnt}" '$5 != d' || true)
done
m=$(echo "$m" | sed '/^$/d')
[ -n "$m" ] && { echo "leak: mounts:"; echo "$m"; bad=1; }
# Each pin namespace holds the pins (nsfs bind mounts) of its runtime's
# sandboxes, prepared ones included. It outlives an agent that is killed
# (a runtime closed with no sandbox left removes it), so an empty one is
# clean; a pin inside is a leaked sandbox. Its root is a bare tmpfs, so we
# look from inside with a static busybox reached through the host's root
# (--wd=/ is opened before entering): its /proc/self/mountinfo lists the
# namespace's mounts.
for p in $pinns; do
  if ! pins=$(nsenter --mount="$p" --wd=/ ./bin/busybox cat ./proc/self/mountinfo 2>/dev/null); then
    echo "leak?: pin namespace $p: cannot look inside (needs a static /bin/busybox)"
    bad=1
    continue
  fi
  pins=$(echo "$pins" | awk '$5 != "/" {print $4, $5}')
  if [ -n "$pins" ]; then
    echo "leak: pins in the pin namespace $p:"; echo "$pins"; bad=1
  else
    echo "note: empty pin namespace $p (clean)"
  fi
done
v=$(ip -o link show 2>/dev/null | grep -E ': sk[0-9a-f]' || true)
[ -n "$v" ] && { echo "leak: veths:"; echo "$v"; bad=1; }
for c in /sys/fs/cgroup/*/skiff /sys/fs/cgroup/skiff /sys/fs/cgroup/unified/skiff; do
  if [ -d "$c" ]; then
    left=$(find "$c" -mindepth 2 -type d 2>/dev/null | head -5)
    [ -n "$left" ] && { echo "leak: cgroups under $c:"; echo "$left"; bad=1; }
  fi
done
p=$(pgrep -af 'skiff (up|server|agent)|skiff-init' 2>/dev/null | grep -v pgrep || true)
[ -n "$p" ] && { echo "leak: processes:"; echo "$p"; bad=1; }
# NFS volumes: the userspace client's FUSE mounts and processes, and the
# tests' NFS server.
n=$(grep -E ' - fuse\.nfs ' /proc/self/mountinfo || true)
[ -n "$n" ] && { echo "leak: nfs mounts:"; echo "$n"; bad=1; }
n=$(pgrep -af '^skiff-nfs|ganesha\.nfsd' 2>/dev/null | grep -v pgrep || true)
[ -n "$n" ] && { echo "leak: nfs processes:"; echo "$n"; bad=1; }
if [ $bad = 0 ]; then echo "leakcheck: clean"; fi
exit $bad
