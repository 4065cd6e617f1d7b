// lockdown.c: credentials, capabilities, no_new_privs and seccomp for a
// container process, done in C because they are per thread (capabilities)
// or need a single-threaded process (setns into a user namespace), and a
// Go process is neither.
//
// The init stage's parent half (skiff_init_stage, below) uses it to become
// the workload; the exec helper (nsenter.c) for exec'd commands.
//
// The pause process (SandboxConfig.SharePID): _SKIFF_PAUSE=<dir> makes the
// process an idle pid 1 that reaps orphans, chrooted into an empty dir.

#define _GNU_SOURCE
#include "lockdown.h"
#include "rootfs.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <pthread.h>

extern char **environ;

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...) {
	int e = errno;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return skiff_errorf(err, errlen, e, "%s", msg);
}

static int unhex(char c) {
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int skiff_lockdown(int userns_fd, uid_t uid, gid_t gid, uint64_t caps, const char *filter_hex,
                   const char *cwd, char *err, size_t errlen) {
	if (userns_fd >= 0) {
		if (setns(userns_fd, CLONE_NEWUSER) < 0)
			return fail(err, errlen, "join user namespace");
		close(userns_fd);
	}
	// Bounding set first: dropping needs CAP_SETPCAP, which a non-root
	// uid loses below.
	for (int c = 0; c < 64; c++) {
		if (caps & (1ULL << c))
			continue;
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0) {
			if (errno == EINVAL)
				break; // past the kernel's last capability
			return fail(err, errlen, "drop capability %d", c);
		}
	}
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
		return fail(err, errlen, "keep capabilities");
	if (setgroups(0, NULL) < 0)
		return fail(err, errlen, "setgroups");
	if (setresgid(gid, gid, gid) < 0)
		return fail(err, errlen, "setgid %u", gid);
	if (setresuid(uid, uid, uid) < 0)
		return fail(err, errlen, "setuid %u", uid);
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof data);
	data[0].effective = data[0].permitted = (uint32_t)caps;
	data[1].effective = data[1].permitted = (uint32_t)(caps >> 32);
	if (syscall(SYS_capset, &hdr, data) < 0)
		return fail(err, errlen, "capset");
	if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0 || prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
		return fail(err, errlen, "clear ambient capabilities");
	if (cwd != NULL && chdir(cwd) < 0)
		return fail(err, errlen, "working directory \"%s\"", cwd);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return fail(err, errlen, "no_new_privs");
	size_t n = filter_hex ? strlen(filter_hex) / 16 : 0;
	if (n == 0)
		return 0;
	struct sock_filter *f = calloc(n, sizeof *f);
	if (f == NULL)
		return fail(err, errlen, "seccomp filter");
	unsigned char *b = (unsigned char *)f;
	for (size_t i = 0; i < n * 8; i++) {
		int hi = unhex(filter_hex[2 * i]), lo = unhex(filter_hex[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			errno = EINVAL;
			return fail(err, errlen, "seccomp filter");
		}
		b[i] = (unsigned char)(hi << 4 | lo);
	}
	struct sock_fprog prog = {(unsigned short)n, f};
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
		return fail(err, errlen, "install seccomp filter");
	free(f);
	return 0;
}

static char *take(const char *name) {
	char *v = getenv(name);
	if (v == NULL)
		return NULL;
	v = strdup(v);
	unsetenv(name);
	return v;
}

// report writes {"Error":"..."} to fd 3 for the runtime and exits.
static void report(const char *msg) {
	char out[1200];
	size_t o = 0;
	o += snprintf(out, sizeof out, "{\"Error\":\"");
	for (const char *p = msg; *p && o < sizeof out - 16; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = c;
		} else if (c < 0x20) {
			o += snprintf(out + o, sizeof out - o, "\\u%04x", c);
		} else {
			out[o++] = c;
		}
	}
	o += snprintf(out + o, sizeof out - o, "\"}\n");
	if (write(3, out, o) < 0) {
		/* the runtime is gone */
	}
	_exit(1);
}

// The init stage. The runtime starts this binary with _SKIFF_SANDBOX_INIT
// set, in new pid and mount namespaces, with
//
//     fd 3        the socketpair to the runtime
//     _SKIFF_NSFDS  fds of the group's namespaces to join (net, ipc, uts)
//     _SKIFF_USERNS_FD  the group's user namespace (absent: none)
//     _SKIFF_CAPS, _SKIFF_SECCOMP  what skiff_lockdown applies
//     _SKIFF_CGROUP_FDS  v1 "tasks" files of its cgroups, to join itself
//
// This constructor does all of it, before any Go runtime starts, and never
// returns: it joins the group's namespaces, reads the container's config
// from the socket (rootfs.h), builds the mount tree and pivots into it,
// resolves the program (rootfs.c), joins its cgroups (v1; on v2 the
// runtime moves it), reports ready, waits for "go", enters a cgroup
// namespace, locks down and execs. The workload is thus pid 1 and the
// runtime's own child, and a start is this one process: no helper, no
// second exec of this binary (its ELF interpreter is not in the
// container's root anyway).
__attribute__((constructor)) static void skiff_init_stage(void) {
	if (getenv("_SKIFF_SANDBOX_INIT") == NULL)
		return;
	char *nsfds = take("_SKIFF_NSFDS"), *userns = take("_SKIFF_USERNS_FD");
	char *caps = take("_SKIFF_CAPS"), *filter = take("_SKIFF_SECCOMP");
	char *cgfds = take("_SKIFF_CGROUP_FDS");
	char err[1024];
	if (nsfds != NULL) {
		char *save = NULL;
		for (char *f = strtok_r(nsfds, ",", &save); f != NULL; f = strtok_r(NULL, ",", &save)) {
			int fd = atoi(f);
			if (setns(fd, 0) < 0) {
				fail(err, sizeof err, "join the group's namespaces");
				report(err);
			}
			close(fd);
		}
	}
	struct skiff_config cfg;
	if (skiff_config_recv(3, &cfg, err, sizeof err) < 0)
		report(err);
	int userns_fd = userns ? atoi(userns) : -1;
	// The mount tree is made as Go made it, with umask 022; the workload
	// gets the runtime's umask, as before.
	mode_t umask_was = umask(022);
	if (skiff_rootfs(&cfg, userns_fd, err, sizeof err) < 0)
		report(err);
	// Now, as root and before the runtime commits cgroups to us, so
	// that a missing binary is reported as such.
	char *prog;
	if (skiff_lookpath(cfg.argv[0], cfg.envp, &prog, err, sizeof err) < 0)
		report(err);
	umask(umask_was);
	// Join our cgroups (v1 tasks files, opened by the runtime): "0" moves
	// just this thread, which is cheap (see cgroups.selfJoinFiles).
	if (cgfds != NULL && *cgfds) {
		char *save = NULL;
		for (char *f = strtok_r(cgfds, ",", &save); f != NULL; f = strtok_r(NULL, ",", &save)) {
			int fd = atoi(f);
			if (write(fd, "0", 1) != 1) {
				fail(err, sizeof err, "join cgroup");
				report(err);
			}
			close(fd);
		}
	}
	static const char ready[] = "{\"Ready\":true}\n";
	if (write(3, ready, sizeof ready - 1) < 0)
		_exit(1);
	// "g", possibly with the container's terminal (TTY) attached as
	// SCM_RIGHTS: it becomes our stdio and controlling terminal.
	char c;
	ssize_t n;
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} cm;
	struct iovec iov = {.iov_base = &c, .iov_len = 1};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf, .msg_controllen = sizeof cm.buf};
	while ((n = recvmsg(3, &mh, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
	}
	if (n != 1)
		_exit(1); // the runtime gave up on us
	struct cmsghdr *ch = CMSG_FIRSTHDR(&mh);
	if (ch != NULL && ch->cmsg_level == SOL_SOCKET && ch->cmsg_type == SCM_RIGHTS &&
	    ch->cmsg_len == CMSG_LEN(sizeof(int))) {
		int tfd;
		memcpy(&tfd, CMSG_DATA(ch), sizeof tfd);
		for (int i = 0; i < 3; i++) {
			if (dup2(tfd, i) < 0) {
				fail(err, sizeof err, "terminal");
				report(err);
			}
		}
		if (tfd > 2)
			close(tfd);
		// We are a session leader (the runtime set Setsid) without one.
		if (ioctl(0, TIOCSCTTY, 0) < 0) {
			fail(err, sizeof err, "controlling terminal");
			report(err);
		}
	}
	// A cgroup namespace rooted at our cgroup: the workload sees "/".
	if (unshare(CLONE_NEWCGROUP) < 0) {
		fail(err, sizeof err, "unshare cgroup namespace");
		report(err);
	}
	fcntl(3, F_SETFD, FD_CLOEXEC); // EOF on exec tells the runtime we run
	if (skiff_lockdown(userns_fd, cfg.uid, cfg.gid, caps ? strtoull(caps, NULL, 16) : 0, filter,
	                   *cfg.cwd ? cfg.cwd : "/", err, sizeof err) < 0)
		report(err);
	execve(prog, cfg.argv, cfg.envp);
	skiff_errorf(err, sizeof err, errno, "exec \"%.256s\"", cfg.argv[0]);
	report(err);
}

__attribute__((constructor)) static void skiff_pause(void) {
	char *dir = take("_SKIFF_PAUSE");
	if (dir == NULL)
		return;
	for (int fd = 0; fd < 3; fd++)
		close(fd);
	if (chroot(dir) < 0 || chdir("/") < 0)
		_exit(1);
	sigset_t set;
	sigfillset(&set);
	sigprocmask(SIG_BLOCK, &set, NULL);
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	for (;;) {
		while (waitpid(-1, NULL, WNOHANG) > 0) {
		}
		sigwaitinfo(&set, NULL);
	}
}

static int userns_child(void *arg) {
	char c;
	// Raw syscalls only: we share the parent's memory and thread area.
	while (syscall(SYS_read, (long)(intptr_t)arg, &c, 1) < 0) {
	}
	syscall(SYS_exit, 0);
	return 0;
}

int skiff_userns_spawn(int fd, void *stack, size_t size) {
	sigset_t all, old;
	sigfillset(&all);
	// The child must never run a (Go) signal handler: it starts with
	// everything blocked.
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int pid = clone(userns_child, (char *)stack + size, CLONE_VM | CLONE_FILES | CLONE_NEWUSER | SIGCHLD, (void *)(intptr_t)fd);
	int e = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return pid < 0 ? -e : pid;
}
