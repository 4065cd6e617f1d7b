package linux

// #include <stdlib.h>
// #include "lockdown.h"
import "C"

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/skiffhq/skiff/internal/sandbox"
)

// User namespaces. Each sandbox gets its own range of 65536 host IDs: uid
// and gid 0..65535 in its containers are hostID..hostID+65535 on the host.
// Ranges are slots of a pool (Config.IDMapBase, Config.IDMapSlots); a
// sandbox's slot is recorded in its sandbox.json, so the pool is rebuilt
// from the state directory on restart. Slots are handed out round-robin,
// so a freed range is reused as late as possible (files a removed group
// left in a hostPath volume keep its IDs).

const idRange = 65536

const (
	// defaultIDMapBase is 0x10000000: inside the range systemd leaves to
	// containers (0x00080000–0x6FFFFFFF), far from login users.
	defaultIDMapBase  = 0x10000000
	defaultIDMapSlots = 16384 // up to 0x50000000
)

type idPool struct {
	mu    sync.Mutex
	base  uint32
	slots uint32
	used  map[uint32]bool // by slot
	next  uint32
}

func newIDPool(base uint32, slots int) *idPool {
	return &idPool{base: base, slots: uint32(slots), used: map[uint32]bool{}}
}

// alloc returns the first host ID of a free range.
func (p *idPool) alloc() (uint32, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := uint32(0); i < p.slots; i++ {
		s := (p.next + i) % p.slots
		if !p.used[s] {
			p.used[s] = true
			p.next = (s + 1) % p.slots
			return p.base + s*idRange, nil
		}
	}
	return 0, fmt.Errorf("%w: all %d user ID ranges are in use", sandbox.ErrUnavailable, p.slots)
}

// claim marks the range of hostID used (recovery).
func (p *idPool) claim(hostID uint32) {
	if hostID < p.base || (hostID-p.base)%idRange != 0 {
		return // from another configuration: not ours to hand out anyway
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s := (hostID - p.base) / idRange
	p.used[s] = true
	if s >= p.next {
		p.next = (s + 1) % p.slots
	}
}

func (p *idPool) release(hostID uint32) {
	if hostID < p.base {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.used, (hostID-p.base)/idRange)
}

// createUserNS makes a user namespace mapping 0..65535 to hostID.. for
// both uids and gids and returns an open fd of it, for the caller to pin
// and close. A user namespace needs a process to be created in: a child
// that shares our memory (no page-table copy, no exec) waits on a pipe
// while we write its maps and open its namespace, then exits.
func createUserNS(hostID uint32) (int, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return -1, err
	}
	defer unix.Close(p[0])
	const stackSize = 64 << 10
	stack := C.malloc(stackSize)
	defer C.free(stack)
	pid := int(C.skiff_userns_spawn(C.int(p[0]), stack, stackSize))
	if pid < 0 {
		unix.Close(p[1])
		return -1, fmt.Errorf("clone user namespace: %w", unix.Errno(-pid))
	}
	proc := "/proc/" + strconv.Itoa(pid)
	m := []byte(fmt.Sprintf("0 %d %d\n", hostID, idRange))
	fd := -1
	err := os.WriteFile(proc+"/uid_map", m, 0)
	if err == nil {
		err = os.WriteFile(proc+"/gid_map", m, 0)
	}
	if err == nil {
		fd, err = unix.Open(proc+"/ns/user", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	unix.Close(p[1]) // EOF: the child exits
	var ws unix.WaitStatus
	for {
		if _, werr := unix.Wait4(pid, &ws, 0, nil); werr != unix.EINTR {
			break
		}
	}
	if err != nil {
		return -1, fmt.Errorf("user namespace: %w", err)
	}
	return fd, nil
}

// chownTree gives a directory tree the container's root (hostID) as
// owner, without following symlinks.
func chownTree(dir string, hostID uint32) error {
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(hostID), int(hostID))
	})
}
