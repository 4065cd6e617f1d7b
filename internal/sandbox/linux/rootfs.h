// rootfs.h: the init stage's configuration (sent by the runtime on the
// init socket) and the container's mount tree, built in C by the init
// stage itself (lockdown.c) before it becomes the workload.
#ifndef SKIFF_ROOTFS_H
#define SKIFF_ROOTFS_H

#include <stddef.h>
#include <stdint.h>

// The message: a 4-byte big-endian length N, then N bytes of
// NUL-terminated fields (see initConfig.encode in init.go):
//
//     "skiff-init-1"  host_id  rootfs  upper  work  read_only_root
//     cwd  uid  gid
//     nlower  lower...                      lowest layer first
//     nmounts (type source dest data ro)...
//     nargs  args...  nenv  env...
//
// Numbers are decimal; read_only_root and ro are "0" or "1". The payload
// must end with the last field.
#define SKIFF_CONFIG_MAGIC "skiff-init-1"
#define SKIFF_CONFIG_MAX (8u << 20)
#define SKIFF_MAX_LAYERS 500
#define SKIFF_MAX_MOUNTS 1024

struct skiff_mount {
	const char *type; // "bind" or "tmpfs"
	const char *source, *dest, *data;
	int readonly;
};

struct skiff_config {
	uint32_t host_id; // host uid/gid of the container's root; 0: none
	const char *rootfs, *upper, *work;
	int readonly_root;
	const char *cwd; // "" for "/"
	uint32_t uid, gid;
	size_t nlower;
	const char **lower;
	size_t nmounts;
	struct skiff_mount *mounts;
	size_t argc, envc;
	char **argv, **envp; // NULL-terminated
	char *buf;           // owns the strings, when read by skiff_config_recv
};

// skiff_config_recv reads one message from fd and parses it into cfg.
// It returns 0, or -1 with a message in err (cfg then holds nothing to
// free).
int skiff_config_recv(int fd, struct skiff_config *cfg, char *err, size_t errlen);

// skiff_config_parse parses a payload in place (the fields point into
// buf, which the caller keeps). It returns 0, or -1 with a message in err.
int skiff_config_parse(char *buf, size_t len, struct skiff_config *cfg, char *err, size_t errlen);

void skiff_config_free(struct skiff_config *cfg);

// skiff_rootfs builds the container's mount tree and pivots into it
// (which moves the root and working directory of the calling process).
// userns_fd (if >= 0) idmaps the lower layers. Returns 0 or -1 with err.
int skiff_rootfs(const struct skiff_config *cfg, int userns_fd, char *err, size_t errlen);

// skiff_lookpath resolves file the way execvp does, with the last PATH in
// envp (or a default). *out is malloc'd. Returns 0 or -1 with err.
int skiff_lookpath(const char *file, char *const envp[], char **out, char *err, size_t errlen);

// skiff_errorf formats a message into err, followed by ": " and the
// description of errno e (as Go spells it: lower case) if e != 0. It
// returns -1.
int skiff_errorf(char *err, size_t errlen, int e, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
