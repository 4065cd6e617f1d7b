// nsenter.c: the exec helper of the linux sandbox runtime.
//
// Joining a mount namespace with setns(2) needs a single-threaded process,
// and a Go process never is one. So this constructor runs before the Go
// runtime starts, in every process of the binary, and does nothing unless
// _SKIFF_NSENTER_PID is set. When it is, the process was started by
// Runtime.Exec as
//
//     argv: skiff-nsenter CMD ARGS...
//     env:  the command's environment + _SKIFF_NSENTER_* variables
//     fd 3: a pipe (write end) on which a failure message is written
//
// It joins the cgroups, then every namespace of the target pid, forks so
// that the child is inside the target's pid namespace, and the child
// execs the command. The parent waits and exits with the child's status
// (128+signal for a signal), so the Go side sees one process with one code.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lockdown.h"

#define ERR_FD 3

static void nsenter_fail(const char *fmt, ...) {
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if (n >= (int)sizeof buf)
		n = sizeof buf - 1;
	if (write(ERR_FD, buf, n) < 0) {
		/* nothing left to report to */
	}
	_exit(126);
}

static char *take_env(const char *name) {
	char *v = getenv(name);
	if (v == NULL)
		return NULL;
	v = strdup(v);
	unsetenv(name);
	return v;
}

// Namespaces in the order they are joined. mnt is last among those that
// change what paths mean; pid only affects children.
static const struct {
	const char *name;
	int type;
} nsenter_ns[] = {
	{"cgroup", CLONE_NEWCGROUP}, {"ipc", CLONE_NEWIPC}, {"uts", CLONE_NEWUTS},
	{"net", CLONE_NEWNET},       {"pid", CLONE_NEWPID}, {"mnt", CLONE_NEWNS},
};
#define NSENTER_NNS (sizeof nsenter_ns / sizeof nsenter_ns[0])

__attribute__((constructor)) static void skiff_nsenter(int argc, char **argv) {
	char *pidstr = take_env("_SKIFF_NSENTER_PID");
	if (pidstr == NULL)
		return;
	char *cgroups = take_env("_SKIFF_NSENTER_CGROUPS");
	char *uidstr = take_env("_SKIFF_NSENTER_UID");
	char *gidstr = take_env("_SKIFF_NSENTER_GID");
	char *userns = take_env("_SKIFF_NSENTER_USERNS");
	char *capstr = take_env("_SKIFF_NSENTER_CAPS");
	char *filter = take_env("_SKIFF_NSENTER_SECCOMP");
	fcntl(ERR_FD, F_SETFD, FD_CLOEXEC);
	if (argc < 2)
		nsenter_fail("nsenter: no command");
	int pid = atoi(pidstr);
	uid_t uid = uidstr ? (uid_t)strtoul(uidstr, NULL, 10) : 0;
	gid_t gid = gidstr ? (gid_t)strtoul(gidstr, NULL, 10) : 0;

	// Open everything first: once in the mount namespace, host paths are gone.
	char path[256];
	int fds[NSENTER_NNS];
	for (size_t i = 0; i < NSENTER_NNS; i++) {
		snprintf(path, sizeof path, "/proc/%d/ns/%s", pid, nsenter_ns[i].name);
		fds[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0)
			nsenter_fail("open %s: %s", path, strerror(errno));
	}
	snprintf(path, sizeof path, "/proc/%d/root", pid);
	int rootfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		nsenter_fail("open %s: %s", path, strerror(errno));
	// The user namespace is joined last, by the child: joining it first
	// would leave no privilege over the other namespaces.
	int usernsfd = -1;
	if (userns != NULL && *userns == '1') {
		snprintf(path, sizeof path, "/proc/%d/ns/user", pid);
		usernsfd = open(path, O_RDONLY | O_CLOEXEC);
		if (usernsfd < 0)
			nsenter_fail("open %s: %s", path, strerror(errno));
	}
	uint64_t caps = capstr ? strtoull(capstr, NULL, 16) : 0;

	// Join the container's cgroups (colon-separated files to write "0"
	// to: v1 tasks, v2 cgroup.procs) before forking, so that the child is
	// accounted from its first page.
	if (cgroups != NULL && *cgroups != '\0') {
		char *save = NULL;
		for (char *f = strtok_r(cgroups, ":", &save); f != NULL; f = strtok_r(NULL, ":", &save)) {
			int fd = open(f, O_WRONLY | O_CLOEXEC);
			if (fd < 0)
				nsenter_fail("open %s: %s", f, strerror(errno));
			if (write(fd, "0", 1) < 0)
				nsenter_fail("join cgroup %s: %s", f, strerror(errno));
			close(fd);
		}
	}

	for (size_t i = 0; i < NSENTER_NNS; i++) {
		if (setns(fds[i], nsenter_ns[i].type) < 0)
			nsenter_fail("setns %s: %s", nsenter_ns[i].name, strerror(errno));
		close(fds[i]);
	}

	pid_t child = fork();
	if (child < 0)
		nsenter_fail("fork: %s", strerror(errno));
	if (child == 0) {
		// If the helper dies (the caller gave up), so does the command.
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		// setns(mnt) put us at the namespace's root; the container's root
		// is the pivoted one, so enter it explicitly.
		if (fchdir(rootfd) < 0 || chroot(".") < 0 || chdir("/") < 0)
			nsenter_fail("enter container root: %s", strerror(errno));
		close(rootfd);
		char err[512];
		if (skiff_lockdown(usernsfd, uid, gid, caps, filter, NULL, err, sizeof err) < 0)
			nsenter_fail("%s", err);
		execvp(argv[1], argv + 1);
		if (errno == ENOENT)
			nsenter_fail("exec: \"%s\": executable file not found in $PATH", argv[1]);
		nsenter_fail("exec: \"%s\": %s", argv[1], strerror(errno));
	}
	close(rootfd);
	if (usernsfd >= 0)
		close(usernsfd);
	close(ERR_FD);
	// Keyboard signals from an exec TTY are for the command, not for us;
	// the caller stops the helper with SIGKILL, which reaches the command
	// through PDEATHSIG.
	signal(SIGINT, SIG_IGN);
	signal(SIGQUIT, SIG_IGN);
	signal(SIGTSTP, SIG_IGN);
	int status;
	for (;;) {
		pid_t r = waitpid(child, &status, 0);
		if (r == child)
			break;
		if (r < 0 && errno != EINTR)
			_exit(125);
	}
	if (WIFEXITED(status))
		_exit(WEXITSTATUS(status));
	if (WIFSIGNALED(status))
		_exit(128 + WTERMSIG(status));
	_exit(125);
}
