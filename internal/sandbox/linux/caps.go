package linux

import "golang.org/x/sys/unix"

// defaultCaps is the capability set a container's root keeps: Docker's
// default set without NET_RAW (no raw or packet sockets). Every other
// capability is dropped from the bounding, effective, permitted and
// inheritable sets; ambient and inheritable are empty. The set is
// relative to the container's user namespace: it grants nothing over
// host resources. A non-root container user ends with none after execve.
const defaultCaps uint64 = 1<<unix.CAP_CHOWN | 1<<unix.CAP_DAC_OVERRIDE | 1<<unix.CAP_FSETID |
	1<<unix.CAP_FOWNER | 1<<unix.CAP_MKNOD | 1<<unix.CAP_SETGID | 1<<unix.CAP_SETUID |
	1<<unix.CAP_SETFCAP | 1<<unix.CAP_SETPCAP | 1<<unix.CAP_NET_BIND_SERVICE |
	1<<unix.CAP_SYS_CHROOT | 1<<unix.CAP_KILL | 1<<unix.CAP_AUDIT_WRITE
