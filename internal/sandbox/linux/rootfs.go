package linux

// The init stage reads its config and builds the container's mount tree in
// C (rootfs.c, called from lockdown.c's constructor). decodeInitConfig
// runs that same parser from Go, for the tests: a _test file cannot use
// cgo.

// #include <stdlib.h>
// #include "rootfs.h"
import "C"

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// decodeInitConfig feeds msg (length and payload, as encode makes it)
// through a pipe to skiff_config_recv, as the init stage reads its socket,
// and returns what the C side parsed, or its error.
func decodeInitConfig(msg []byte) (*initConfig, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, err
	}
	written := make(chan struct{})
	go func() {
		defer close(written)
		defer unix.Close(p[1])
		for b := msg; len(b) > 0; {
			n, err := unix.Write(p[1], b)
			if err != nil {
				return // EPIPE: the reader stopped early
			}
			b = b[n:]
		}
	}()
	const errLen = 1024
	errBuf := (*C.char)(C.calloc(errLen, 1))
	defer C.free(unsafe.Pointer(errBuf))
	var cfg C.struct_skiff_config
	rc := C.skiff_config_recv(C.int(p[0]), &cfg, errBuf, errLen)
	unix.Close(p[0])
	<-written
	if rc != 0 {
		return nil, errors.New(C.GoString(errBuf))
	}
	defer C.skiff_config_free(&cfg)
	strs := func(v **C.char, n C.size_t) []string {
		var out []string
		for _, s := range unsafe.Slice(v, int(n)) {
			out = append(out, C.GoString(s))
		}
		return out
	}
	c := &initConfig{
		HostID:       uint32(cfg.host_id),
		Rootfs:       C.GoString(cfg.rootfs),
		Upper:        C.GoString(cfg.upper),
		Work:         C.GoString(cfg.work),
		ReadOnlyRoot: cfg.readonly_root != 0,
		Cwd:          C.GoString(cfg.cwd),
		UID:          uint32(cfg.uid),
		GID:          uint32(cfg.gid),
		Lower:        strs((**C.char)(unsafe.Pointer(cfg.lower)), cfg.nlower),
		Args:         strs(cfg.argv, cfg.argc),
		Env:          strs(cfg.envp, cfg.envc),
	}
	if cfg.nmounts > 0 {
		for _, m := range unsafe.Slice(cfg.mounts, int(cfg.nmounts)) {
			c.Mounts = append(c.Mounts, initMount{Type: C.GoString(m._type), Source: C.GoString(m.source),
				Dest: C.GoString(m.dest), Data: C.GoString(m.data), ReadOnly: m.readonly != 0})
		}
	}
	return c, nil
}
