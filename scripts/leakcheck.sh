#!/usr/bin/env bash
# After the suite: nothing skiff-made may be left on the machine.
set -uo pipefail
bad=0
# Sandboxes leave nsfs (pinned namespaces), overlay and tmpfs mounts behind
# when they leak; the host itself has none of those under a data dir.
m=$(grep -E ' - (nsfs|overlay) |/sandboxes/|skiff' /proc/self/mountinfo || true)
[ -n "$m" ] && { echo "leak: mounts:"; echo "$m"; bad=1; }
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
if [ $bad = 0 ]; then echo "leakcheck: clean"; fi
exit $bad
