// rootfs.c: the container's configuration and mount tree, in C, so that
// the init stage (lockdown.c) does all of its work in one single-threaded
// process that then becomes the workload: no Go runtime starts in it.
//
// The configuration comes from the runtime (initConfig.encode, init.go)
// and is checked field by field: a malformed message is an error string,
// never a crash or a read past its end.

#define _GNU_SOURCE
#include "rootfs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#ifndef MOUNT_ATTR_IDMAP
#include <linux/mount.h> // glibc < 2.36 declares none of the new mount API
#endif
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

int skiff_errorf(char *err, size_t errlen, int e, const char *fmt, ...) {
	if (errlen == 0)
		return -1;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	if (n < 0) {
		err[0] = 0;
		n = 0;
	}
	if (e != 0 && (size_t)n < errlen) {
		char desc[128];
		snprintf(desc, sizeof desc, "%s", strerror(e));
		if (desc[0] >= 'A' && desc[0] <= 'Z' && !(desc[1] >= 'A' && desc[1] <= 'Z'))
			desc[0] += 'a' - 'A';
		snprintf(err + n, errlen - n, ": %s", desc);
	}
	return -1;
}

// ---- configuration ----

struct reader {
	char *p, *end;
	char *err;
	size_t errlen;
};

// field returns the next NUL-terminated string, or NULL (with err set) if
// none ends before the end of the payload.
static const char *field(struct reader *r, const char *name) {
	char *z = r->p < r->end ? memchr(r->p, 0, r->end - r->p) : NULL;
	if (z == NULL) {
		skiff_errorf(r->err, r->errlen, 0, "init config: truncated at %s", name);
		return NULL;
	}
	const char *s = r->p;
	r->p = z + 1;
	return s;
}

static int number(struct reader *r, const char *name, uint64_t max, uint64_t *out) {
	const char *s = field(r, name);
	if (s == NULL)
		return -1;
	size_t n = strlen(s);
	uint64_t v = 0;
	if (n == 0 || n > 10)
		goto bad;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			goto bad;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v > max)
		goto bad;
	*out = v;
	return 0;
bad:
	return skiff_errorf(r->err, r->errlen, 0, "init config: bad %s \"%.32s\"", name, s);
}

static int id(struct reader *r, const char *name, uint32_t *out) {
	uint64_t v;
	if (number(r, name, UINT32_MAX, &v) < 0)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

static int flag(struct reader *r, const char *name, int *out) {
	uint64_t v;
	if (number(r, name, 1, &v) < 0)
		return -1;
	*out = (int)v;
	return 0;
}

// A count of fields to follow: each takes at least a byte.
static int count(struct reader *r, const char *name, size_t max, size_t *out) {
	uint64_t v;
	if (number(r, name, max, &v) < 0)
		return -1;
	if (v > (uint64_t)(r->end - r->p))
		return skiff_errorf(r->err, r->errlen, 0, "init config: %s %llu longer than the message", name,
		                    (unsigned long long)v);
	*out = (size_t)v;
	return 0;
}

enum { PATH_EMPTY_OK = 1, PATH_OVERLAY = 2 };

// abspath reads an absolute path shorter than PATH_MAX; PATH_OVERLAY also
// rules out overlayfs's separators.
static const char *abspath(struct reader *r, const char *name, int opts) {
	const char *s = field(r, name);
	if (s == NULL)
		return NULL;
	size_t n = strlen(s);
	if (n == 0 && (opts & PATH_EMPTY_OK))
		return s;
	if (n == 0 || s[0] != '/' || n >= PATH_MAX || ((opts & PATH_OVERLAY) && strpbrk(s, ",:") != NULL)) {
		skiff_errorf(r->err, r->errlen, 0, "init config: bad %s \"%.200s\"", name, s);
		return NULL;
	}
	return s;
}

static char **strings(struct reader *r, const char *name, size_t *n) {
	if (count(r, name, SIZE_MAX / sizeof(char *) - 1, n) < 0)
		return NULL;
	char **v = calloc(*n + 1, sizeof *v);
	if (v == NULL) {
		skiff_errorf(r->err, r->errlen, ENOMEM, "init config: %s", name);
		return NULL;
	}
	for (size_t i = 0; i < *n; i++) {
		if ((v[i] = (char *)field(r, name)) == NULL) {
			free(v);
			return NULL;
		}
	}
	return v;
}

void skiff_config_free(struct skiff_config *cfg) {
	free(cfg->lower);
	free(cfg->mounts);
	free(cfg->argv);
	free(cfg->envp);
	free(cfg->buf);
	memset(cfg, 0, sizeof *cfg);
}

static int parse(struct reader *r, struct skiff_config *cfg) {
	const char *magic = field(r, "version");
	if (magic == NULL)
		return -1;
	if (strcmp(magic, SKIFF_CONFIG_MAGIC) != 0)
		return skiff_errorf(r->err, r->errlen, 0, "init config: unknown version \"%.32s\"", magic);
	if (id(r, "host id", &cfg->host_id) < 0)
		return -1;
	if ((cfg->rootfs = abspath(r, "rootfs", 0)) == NULL || (cfg->upper = abspath(r, "upper dir", PATH_OVERLAY)) == NULL ||
	    (cfg->work = abspath(r, "work dir", PATH_OVERLAY)) == NULL)
		return -1;
	if (flag(r, "read-only root", &cfg->readonly_root) < 0)
		return -1;
	if ((cfg->cwd = abspath(r, "working dir", PATH_EMPTY_OK)) == NULL)
		return -1;
	if (id(r, "uid", &cfg->uid) < 0 || id(r, "gid", &cfg->gid) < 0)
		return -1;

	if (count(r, "layer count", SKIFF_MAX_LAYERS, &cfg->nlower) < 0)
		return -1;
	if (cfg->nlower == 0)
		return skiff_errorf(r->err, r->errlen, 0, "init config: no rootfs layers");
	if ((cfg->lower = calloc(cfg->nlower, sizeof *cfg->lower)) == NULL)
		return skiff_errorf(r->err, r->errlen, ENOMEM, "init config");
	for (size_t i = 0; i < cfg->nlower; i++)
		if ((cfg->lower[i] = abspath(r, "rootfs layer", PATH_OVERLAY)) == NULL)
			return -1;

	if (count(r, "mount count", SKIFF_MAX_MOUNTS, &cfg->nmounts) < 0)
		return -1;
	if (cfg->nmounts > 0 && (cfg->mounts = calloc(cfg->nmounts, sizeof *cfg->mounts)) == NULL)
		return skiff_errorf(r->err, r->errlen, ENOMEM, "init config");
	for (size_t i = 0; i < cfg->nmounts; i++) {
		struct skiff_mount *m = &cfg->mounts[i];
		if ((m->type = field(r, "mount type")) == NULL)
			return -1;
		int bind = strcmp(m->type, "bind") == 0;
		if (!bind && strcmp(m->type, "tmpfs") != 0)
			return skiff_errorf(r->err, r->errlen, 0, "init config: unknown mount type \"%.32s\"", m->type);
		if ((m->source = abspath(r, "mount source", bind ? 0 : PATH_EMPTY_OK)) == NULL ||
		    (m->dest = abspath(r, "mount destination", 0)) == NULL || (m->data = field(r, "mount data")) == NULL)
			return -1;
		if (strcmp(m->dest, "/") == 0)
			return skiff_errorf(r->err, r->errlen, 0, "init config: mount on \"/\"");
		if (strlen(m->data) >= 4096)
			return skiff_errorf(r->err, r->errlen, 0, "init config: mount data longer than a page");
		if (flag(r, "mount read-only", &m->readonly) < 0)
			return -1;
	}

	if ((cfg->argv = strings(r, "argument count", &cfg->argc)) == NULL)
		return -1;
	if (cfg->argc == 0 || cfg->argv[0][0] == 0)
		return skiff_errorf(r->err, r->errlen, 0, "init config: no command");
	if ((cfg->envp = strings(r, "environment count", &cfg->envc)) == NULL)
		return -1;
	if (r->p != r->end)
		return skiff_errorf(r->err, r->errlen, 0, "init config: %zu bytes after the last field",
		                    (size_t)(r->end - r->p));
	return 0;
}

int skiff_config_parse(char *buf, size_t len, struct skiff_config *cfg, char *err, size_t errlen) {
	memset(cfg, 0, sizeof *cfg);
	struct reader r = {buf, buf + len, err, errlen};
	if (parse(&r, cfg) < 0) {
		skiff_config_free(cfg);
		return -1;
	}
	return 0;
}

// read_full reads exactly n bytes; it returns how many it got before EOF,
// or -1 on an error.
static ssize_t read_full(int fd, char *p, size_t n) {
	size_t got = 0;
	while (got < n) {
		ssize_t k = read(fd, p + got, n - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -1;
		if (k == 0)
			break;
		got += (size_t)k;
	}
	return (ssize_t)got;
}

int skiff_config_recv(int fd, struct skiff_config *cfg, char *err, size_t errlen) {
	memset(cfg, 0, sizeof *cfg);
	unsigned char h[4];
	ssize_t k = read_full(fd, (char *)h, sizeof h);
	if (k < 0)
		return skiff_errorf(err, errlen, errno, "read init config");
	if (k < (ssize_t)sizeof h)
		return skiff_errorf(err, errlen, 0, "read init config: truncated length (%zd bytes)", k);
	uint32_t n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
	if (n == 0 || n > SKIFF_CONFIG_MAX)
		return skiff_errorf(err, errlen, 0, "read init config: length %u out of range", n);
	char *buf = malloc(n);
	if (buf == NULL)
		return skiff_errorf(err, errlen, ENOMEM, "read init config");
	k = read_full(fd, buf, n);
	if (k < 0) {
		skiff_errorf(err, errlen, errno, "read init config");
		free(buf);
		return -1;
	}
	if (k < (ssize_t)n) {
		skiff_errorf(err, errlen, 0, "read init config: truncated (%zd of %u bytes)", k, n);
		free(buf);
		return -1;
	}
	if (skiff_config_parse(buf, n, cfg, err, errlen) < 0) {
		free(buf);
		return -1;
	}
	cfg->buf = buf;
	return 0;
}

// ---- mount tree ----

// mkdir_all is os.MkdirAll: it makes path and any missing parents.
static int mkdir_all(const char *path, mode_t mode) {
	struct stat st;
	if (stat(path, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			return 0;
		errno = ENOTDIR;
		return -1;
	}
	char p[PATH_MAX];
	size_t n = strlen(path);
	if (n >= sizeof p) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(p, path, n + 1);
	for (char *s = p + 1;; s++) {
		if (*s != '/' && *s != 0)
			continue;
		char c = *s;
		*s = 0;
		if (mkdir(p, mode) < 0) {
			int e = errno;
			if (e != EEXIST || stat(p, &st) < 0 || !S_ISDIR(st.st_mode)) {
				errno = e == EEXIST ? ENOTDIR : e;
				return -1;
			}
		}
		*s = c;
		if (c == 0)
			return 0;
		while (s[1] == '/')
			s++;
		if (s[1] == 0)
			return 0;
	}
}

static int create_file(const char *path, mode_t mode) {
	int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOCTTY, mode);
	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

// idmap_in_place mounts an idmapped clone of dir on dir: files owned by
// host ID n appear owned by the user namespace's n.
static int idmap_in_place(const char *dir, int userns_fd, char *err, size_t errlen) {
	int fd = (int)syscall(SYS_open_tree, AT_FDCWD, dir, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
	if (fd < 0)
		return skiff_errorf(err, errlen, errno, "idmap %s: open_tree", dir);
	struct mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)userns_fd};
	if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0) {
		skiff_errorf(err, errlen, errno, "idmap %s: mount_setattr", dir);
		close(fd);
		return -1;
	}
	if (syscall(SYS_move_mount, fd, "", AT_FDCWD, dir, MOVE_MOUNT_F_EMPTY_PATH) < 0) {
		skiff_errorf(err, errlen, errno, "idmap %s: move_mount", dir);
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

#define NOSUID_NODEV_NOEXEC (MS_NOSUID | MS_NODEV | MS_NOEXEC)

static const struct {
	const char *name;
	unsigned major, minor;
} devices[] = {{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};

static const char *const dev_links[][2] = {
    {"/proc/self/fd", "/dev/fd"},     {"/proc/self/fd/0", "/dev/stdin"}, {"/proc/self/fd/1", "/dev/stdout"},
    {"/proc/self/fd/2", "/dev/stderr"}, {"pts/ptmx", "/dev/ptmx"},       {"/proc/kcore", "/dev/core"},
};

// populate_dev makes the device nodes of a fresh /dev (mknod is cheaper
// than a bind mount each; bind from the host where mknod is not allowed)
// and its usual links.
static int populate_dev(const char *old, uint32_t host_id, char *err, size_t errlen) {
	for (size_t i = 0; i < sizeof devices / sizeof devices[0]; i++) {
		char p[64], src[PATH_MAX];
		snprintf(p, sizeof p, "/dev/%s", devices[i].name);
		if (mknod(p, S_IFCHR | 0666, makedev(devices[i].major, devices[i].minor)) == 0) {
			// chmod: the umask applies to mknod.
			if (chmod(p, 0666) < 0 || (host_id != 0 && lchown(p, host_id, host_id) < 0))
				return skiff_errorf(err, errlen, errno, "create %s", p);
			continue;
		}
		snprintf(src, sizeof src, "%s%s", old, p);
		if (create_file(p, 0666) < 0 || mount(src, p, NULL, MS_BIND, NULL) < 0)
			return skiff_errorf(err, errlen, errno, "create %s", p);
	}
	for (size_t i = 0; i < sizeof dev_links / sizeof dev_links[0]; i++)
		if (symlink(dev_links[i][0], dev_links[i][1]) < 0)
			return skiff_errorf(err, errlen, errno, "symlink %s %s", dev_links[i][0], dev_links[i][1]);
	return 0;
}

// mount_special mounts the container's /proc, /dev and /sys. The tmpfs
// directories and the tty group (5) belong to the container's root.
static int mount_special(const char *old, uint32_t host_id, char *err, size_t errlen) {
	char owner[64] = "", dev[128], shm[128], pts[128];
	if (host_id != 0)
		snprintf(owner, sizeof owner, ",uid=%u,gid=%u", host_id, host_id);
	snprintf(dev, sizeof dev, "mode=755,size=65536k%s", owner);
	snprintf(shm, sizeof shm, "mode=1777,size=65536k%s", owner);
	snprintf(pts, sizeof pts, "newinstance,ptmxmode=0666,mode=0620,gid=%u", host_id + 5);
	const struct {
		const char *source, *target, *fstype;
		unsigned long flags;
		const char *data;
	} ms[] = {
	    {"proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, ""},
	    {"tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, dev},
	    {"devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, pts},
	    {"tmpfs", "/dev/shm", "tmpfs", NOSUID_NODEV_NOEXEC, shm},
	    {"mqueue", "/dev/mqueue", "mqueue", NOSUID_NODEV_NOEXEC, ""},
	    {"sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC | MS_RDONLY, ""},
	};
	for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
		if (mkdir_all(ms[i].target, 0755) < 0)
			return skiff_errorf(err, errlen, errno, "mkdir %s", ms[i].target);
		if (mount(ms[i].source, ms[i].target, ms[i].fstype, ms[i].flags, ms[i].data) < 0)
			return skiff_errorf(err, errlen, errno, "mount %s on %s", ms[i].fstype, ms[i].target);
		if (strcmp(ms[i].target, "/dev") == 0 && populate_dev(old, host_id, err, errlen) < 0)
			return -1;
	}
	return 0;
}

// Paths hidden from the container, and paths it may read but not write
// (Docker's lists): kernel memory, keys, timers and scheduler internals,
// firmware and power-capping interfaces; sysctls, sysrq, bus and irq
// settings.
static const char *const masked_paths[] = {
    "/proc/acpi",        "/proc/asound",      "/proc/interrupts", "/proc/kcore",  "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi",        "/sys/firmware",     "/sys/devices/virtual/powercap",
};
static const char *const readonly_paths[] = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"};

// mask_paths hides masked_paths (an empty read-only tmpfs over
// directories, /dev/null over files) and makes readonly_paths read-only.
// The mount namespace is the host root's: the container cannot undo either.
static int mask_paths(char *err, size_t errlen) {
	for (size_t i = 0; i < sizeof masked_paths / sizeof masked_paths[0]; i++) {
		const char *p = masked_paths[i];
		struct stat st;
		if (stat(p, &st) < 0)
			continue; // not on this kernel
		int r = S_ISDIR(st.st_mode) ? mount("tmpfs", p, "tmpfs", NOSUID_NODEV_NOEXEC | MS_RDONLY, "mode=555")
		                            : mount("/dev/null", p, NULL, MS_BIND, NULL);
		if (r < 0)
			return skiff_errorf(err, errlen, errno, "mask %s", p);
	}
	for (size_t i = 0; i < sizeof readonly_paths / sizeof readonly_paths[0]; i++) {
		const char *p = readonly_paths[i];
		if (mount(p, p, NULL, MS_BIND | MS_REC, NULL) < 0) {
			if (errno == ENOENT)
				continue;
			return skiff_errorf(err, errlen, errno, "read-only %s", p);
		}
		if (mount(NULL, p, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | NOSUID_NODEV_NOEXEC, NULL) < 0)
			return skiff_errorf(err, errlen, errno, "read-only %s", p);
	}
	return 0;
}

// mount_one mounts a tmpfs or a bind of a host path, reached through the
// old root, at m->dest inside the container.
static int mount_one(const char *old, const struct skiff_mount *m, char *err, size_t errlen) {
	const char *dst = m->dest;
	if (strcmp(m->type, "tmpfs") == 0) {
		if (mkdir_all(dst, 0755) < 0)
			return skiff_errorf(err, errlen, errno, "mount point %s", dst);
		unsigned long flags = MS_NOSUID | MS_NODEV | (m->readonly ? MS_RDONLY : 0);
		if (mount("tmpfs", dst, "tmpfs", flags, m->data) < 0)
			return skiff_errorf(err, errlen, errno, "mount tmpfs on %s", dst);
		return 0;
	}
	char src[2 * PATH_MAX];
	snprintf(src, sizeof src, "%s%s", old, m->source);
	struct stat st;
	if (stat(src, &st) < 0)
		return skiff_errorf(err, errlen, errno, "mount source %s", m->source);
	// Make the mount point the same kind as the source.
	int r = 0;
	if (S_ISDIR(st.st_mode)) {
		r = mkdir_all(dst, 0755);
	} else if (stat(dst, &st) < 0) {
		char parent[PATH_MAX];
		snprintf(parent, sizeof parent, "%s", dst);
		char *slash = strrchr(parent, '/');
		if (slash != NULL && slash != parent) {
			*slash = 0;
			r = mkdir_all(parent, 0755);
		}
		if (r == 0)
			r = create_file(dst, 0644);
	}
	if (r < 0)
		return skiff_errorf(err, errlen, errno, "mount point %s", dst);
	if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) < 0)
		return skiff_errorf(err, errlen, errno, "bind %s on %s", m->source, dst);
	if (m->readonly && mount(NULL, dst, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0)
		return skiff_errorf(err, errlen, errno, "read-only %s", dst);
	return 0;
}

// skiff_rootfs mounts the overlay, pivots into it and builds the
// container's mount tree. Sources of bind mounts are reached through the
// old root, which is mounted at an unguessable name until the end, so that
// symlinks in the image resolve inside the container, never on the host.
int skiff_rootfs(const struct skiff_config *cfg, int userns_fd, char *err, size_t errlen) {
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return skiff_errorf(err, errlen, errno, "make mounts private");
	if (userns_fd >= 0) {
		// The shared snapshots belong to the host's root; seen through
		// idmapped mounts (on top of themselves, in this mount namespace
		// only) they belong to the container's. The writable layer is
		// not idmapped: what the container writes there is owned by its
		// host IDs.
		for (size_t i = 0; i < cfg->nlower; i++)
			if (idmap_in_place(cfg->lower[i], userns_fd, err, errlen) < 0)
				return -1;
	}
	// lowerdir=top:...:bottom,upperdir=...,workdir=...
	size_t n = strlen("lowerdir=,upperdir=,workdir=") + strlen(cfg->upper) + strlen(cfg->work) + 1;
	for (size_t i = 0; i < cfg->nlower; i++)
		n += strlen(cfg->lower[i]) + 1;
	char *opts = malloc(n);
	if (opts == NULL)
		return skiff_errorf(err, errlen, ENOMEM, "mount rootfs overlay");
	char *o = stpcpy(opts, "lowerdir=");
	for (size_t i = cfg->nlower; i-- > 0;) {
		o = stpcpy(o, cfg->lower[i]);
		if (i > 0)
			*o++ = ':';
	}
	o = stpcpy(stpcpy(o, ",upperdir="), cfg->upper);
	o = stpcpy(stpcpy(o, ",workdir="), cfg->work);
	// mount(2) reads one page of options: more would be cut short.
	if ((size_t)(o - opts) >= 4096) {
		free(opts);
		return skiff_errorf(err, errlen, 0, "mount rootfs overlay: options of %zu bytes for %zu layers, at most 4095",
		                    (size_t)(o - opts), cfg->nlower);
	}
	int r = mount("overlay", cfg->rootfs, "overlay", 0, opts);
	int e = errno;
	free(opts);
	if (r < 0)
		return skiff_errorf(err, errlen, e, "mount rootfs overlay");

	unsigned char rnd[8];
	if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
		return skiff_errorf(err, errlen, errno, "rootfs: random name");
	char old[32], put_old[PATH_MAX + 32];
	snprintf(old, sizeof old, "/.skiff-old-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3], rnd[4],
	         rnd[5], rnd[6], rnd[7]);
	snprintf(put_old, sizeof put_old, "%s%s", cfg->rootfs, old);
	if (mkdir(put_old, 0700) < 0)
		return skiff_errorf(err, errlen, errno, "rootfs: mkdir %s", put_old);
	if (syscall(SYS_pivot_root, cfg->rootfs, put_old) < 0)
		return skiff_errorf(err, errlen, errno, "pivot_root");
	if (chdir("/") < 0)
		return skiff_errorf(err, errlen, errno, "chdir /");

	if (mount_special(old, cfg->host_id, err, errlen) < 0 || mask_paths(err, errlen) < 0)
		return -1;
	for (size_t i = 0; i < cfg->nmounts; i++)
		if (mount_one(old, &cfg->mounts[i], err, errlen) < 0)
			return -1;
	if (umount2(old, MNT_DETACH) < 0)
		return skiff_errorf(err, errlen, errno, "detach old root");
	if (rmdir(old) < 0)
		return skiff_errorf(err, errlen, errno, "remove old root");
	if (cfg->readonly_root && mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0)
		return skiff_errorf(err, errlen, errno, "read-only root");
	return 0;
}

// ---- program lookup ----

static const char default_path[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

static int executable(const char *p) {
	struct stat st;
	if (stat(p, &st) < 0)
		return -1;
	if (S_ISDIR(st.st_mode)) {
		errno = EISDIR;
		return -1;
	}
	if ((st.st_mode & 0111) == 0) {
		errno = EACCES;
		return -1;
	}
	return 0;
}

// skiff_lookpath checks now, as root and before the runtime commits
// cgroups to us, that the program exists, so that a missing binary is
// reported as such (the messages are Go's exec.LookPath's).
int skiff_lookpath(const char *file, char *const envp[], char **out, char *err, size_t errlen) {
	if (strchr(file, '/') != NULL) {
		if (executable(file) < 0)
			return skiff_errorf(err, errlen, errno, "exec: \"%.256s\"", file);
		if ((*out = strdup(file)) == NULL)
			return skiff_errorf(err, errlen, ENOMEM, "exec");
		return 0;
	}
	const char *path = default_path;
	for (char *const *e = envp; *e != NULL; e++)
		if (strncmp(*e, "PATH=", 5) == 0)
			path = *e + 5; // the last one wins, as in Go
	size_t fl = strlen(file);
	// An empty PATH lists no directories (Go's filepath.SplitList); an
	// empty entry in it is ".".
	for (const char *d = path; *path != 0; d++) {
		const char *c = strchrnul(d, ':');
		const char *dir = c > d ? d : ".";
		size_t dl = c > d ? (size_t)(c - d) : 1;
		char *p = malloc(dl + fl + 2);
		if (p == NULL)
			return skiff_errorf(err, errlen, ENOMEM, "exec");
		memcpy(p, dir, dl);
		if (p[dl - 1] != '/')
			p[dl++] = '/';
		memcpy(p + dl, file, fl + 1);
		if (executable(p) == 0) {
			*out = p;
			return 0;
		}
		free(p);
		if (*c == 0)
			break;
		d = c;
	}
	return skiff_errorf(err, errlen, 0, "exec: \"%.256s\": executable file not found in $PATH", file);
}
