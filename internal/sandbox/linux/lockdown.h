// lockdown.h: the last steps before a container process execs, shared by
// the exec stage of StartContainer and the exec helper (nsenter.c).
#ifndef SKIFF_LOCKDOWN_H
#define SKIFF_LOCKDOWN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

// skiff_lockdown joins userns_fd (if >= 0), drops every capability not in
// caps from the bounding set, becomes uid/gid with no supplementary
// groups, sets effective = permitted = caps (inheritable and ambient
// empty), changes to cwd (if not NULL), sets no_new_privs and installs
// the seccomp filter given as hex-encoded struct sock_filter (if not
// empty). It returns 0, or -1 with a message in err.
int skiff_lockdown(int userns_fd, uid_t uid, gid_t gid, uint64_t caps, const char *filter_hex,
                   const char *cwd, char *err, size_t errlen);

// skiff_userns_spawn starts a child in a new user namespace that waits
// until fd is readable (EOF), then exits; it shares our memory and runs on
// stack (size bytes) and our file table (so that closing the pipe
// in the parent is its EOF). Returns its pid or -errno.
int skiff_userns_spawn(int fd, void *stack, size_t size);

#endif
