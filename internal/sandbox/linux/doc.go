// Package linux is the sandbox.Runtime that runs container groups as plain
// Linux processes in namespaces and cgroups, with no shim and no daemon:
// the agent process is the parent of every workload, and each workload is
// the only process a container adds to the host.
//
// A sandbox is a directory under Config.StateDir, net, ipc, uts and user
// namespaces pinned in a mount namespace of the runtime's own (so that the
// host's mount table does not grow with them), a cgroup, generated /etc
// files and volumes. Sandboxes can be prepared ahead of demand and claimed
// by a group (sandbox.Pool). A
// container is started by re-executing the running binary (/proc/self/exe)
// as a short init stage in new pid and mount namespaces: a C constructor
// (lockdown.c, rootfs.c), which runs before the Go runtime starts and never
// returns, joins the group's namespaces, reads the container's config from
// its socket, mounts an overlayfs root (over idmapped image layers) and
// the usual special filesystems, pivots into it, joins its cgroups, enters
// the group's user namespace, drops capabilities, sets no_new_privs and a
// seccomp filter, and execs the workload: a start is one process. Exec
// uses a C constructor (nsenter.c) that joins a container's namespaces
// before the Go runtime starts, and applies the same lockdown.
//
// cgo is required. Init, which main may call first thing, only guards
// against a binary whose constructors did not run.
//
// See README.md for the process and mount flow.
package linux
