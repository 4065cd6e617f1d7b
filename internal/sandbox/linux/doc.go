// Package linux is the sandbox.Runtime that runs container groups as plain
// Linux processes in namespaces and cgroups, with no shim and no daemon:
// the agent process is the parent of every workload, and each workload is
// the only process a container adds to the host.
//
// A sandbox is a directory under Config.StateDir holding pinned net, ipc,
// uts and user namespaces, a cgroup, generated /etc files and volumes. A
// container is started by re-executing the running binary (/proc/self/exe)
// as a short init stage in new pid and mount namespaces: a C constructor
// (lockdown.c) joins the group's namespaces and forks a Go helper that
// mounts an overlayfs root (over idmapped image layers) and the usual
// special filesystems and pivots into it; the C half then joins its
// cgroups, enters the group's user namespace, drops capabilities, sets
// no_new_privs and a seccomp filter, and execs the workload. Exec uses a C
// constructor (nsenter.c) that joins a container's namespaces before the
// Go runtime starts, and applies the same lockdown.
//
// Binaries that import this package must let Init run before anything else;
// the package's own init function calls it, and main may call it again,
// first thing, to make that explicit. cgo is required.
//
// See README.md for the process and mount flow.
package linux
