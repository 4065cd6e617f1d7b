package linux

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiffhq/skiff/internal/sandbox"
)

// PinnedKeys lists the sandboxes with pins in r's pin namespace.
func PinnedKeys(r *Runtime) ([]string, error) {
	m, err := r.pins.keys()
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, err
}

// CreateLegacySandbox makes a sandbox the way the previous version did,
// namespaces pinned in the host mount namespace at <dir>/ns/*, without
// telling r: a new Runtime over the same state finds it.
func CreateLegacySandbox(r *Runtime, id, hostname string) error {
	dir := sandboxDir(r.cfg.StateDir, id)
	for _, d := range []string{"ns", "etc", "volumes", "containers"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o711); err != nil {
			return err
		}
	}
	hostID, err := r.ids.alloc()
	if err != nil {
		return err
	}
	fds, err := createNamespaces(hostname)
	if err != nil {
		return err
	}
	defer func() { closeNSFDs(fds) }()
	fd, err := createUserNS(hostID)
	if err != nil {
		return err
	}
	fds = append(fds, nsFD{"user", fd})
	for _, ns := range fds {
		p := filepath.Join(dir, "ns", ns.name)
		if err := os.WriteFile(p, nil, 0o444); err != nil {
			return err
		}
		if err := unix.Mount("/proc/self/fd/"+strconv.Itoa(ns.fd), p, "", unix.MS_BIND, ""); err != nil {
			return err
		}
	}
	if err := r.cg.create(id, 0, 0, r.cfg.DefaultPids, true); err != nil {
		return err
	}
	cfg := sandbox.SandboxConfig{ID: id, Hostname: hostname}
	if err := writeEtc(filepath.Join(dir, "etc"), cfg, "", hostID); err != nil {
		return err
	}
	return writeJSON(filepath.Join(dir, "sandbox.json"), sandboxState{Config: cfg, CreatedAt: time.Now(), HostID: hostID, Complete: true})
}

// PeerMountNS makes a new mount namespace, a copy of ours (shared mounts
// get a peer in it), and returns an fd that keeps it alive.
func PeerMountNS() (int, error) {
	fd := -1
	var err error
	onThrowawayThread(func() {
		if err = unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err == nil {
			fd, err = unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		}
	})
	return fd, err
}
