package linux

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// The pin namespace. A sandbox's net, ipc, uts and user namespaces have no
// process in them until a container starts, so each is kept alive by a
// bind mount of its nsfs file (a pin). Pins used to live in the host's
// mount namespace, where every clone(CLONE_NEWNS) — every container start,
// every `unshare -m` on the host — copies them along with the rest of the
// mount table: at 1000 sandboxes that copy was most of a start. So pins
// live in one mount namespace of the runtime's own, whose root is a small
// tmpfs and nothing else (no copy of the host's mounts stays referenced):
//
//	pin namespace   /                         tmpfs
//	                /<key>/{net,ipc,uts,user} bind mounts of nsfs files
//	host            StateDir/pins             bind mount of itself, private
//	                StateDir/pins/mnt         bind mount of the pin
//	                                          namespace's own nsfs file
//
// The bind mount at StateDir/pins/mnt keeps the pin namespace alive without
// a process, across agent restarts; a new Runtime finds it there. It sits
// on a private mount of its own because the kernel refuses to propagate a
// mount namespace's file (it could make a namespace hold itself): on a
// shared mount with peers (systemd makes / shared) the bind would fail.
// Close removes both once the runtime has no sandbox left (the pin
// namespace would be empty).
//
// The runtime enters the pin namespace only on throwaway OS threads
// (unshare(CLONE_FS), so the thread has a root and cwd of its own, then
// setns; the thread is never unlocked, so it dies with its goroutine) to
// pin, unpin and open pins. What the rest of the runtime gets are file
// descriptors: the init stage's namespace fds, /proc/self/fd/N for
// Network.Attach.
//
// Sandboxes made by an earlier version have their pins in the host mount
// namespace, at <sandbox dir>/ns/*; they are used and removed there.

type pins struct {
	dir  string // StateDir/pins
	path string // StateDir/pins/mnt
	fd   int    // the pin namespace's nsfs file
}

// openPins finds the pin namespace of stateDir, or makes one.
func openPins(stateDir string) (*pins, error) {
	dir := filepath.Join(stateDir, "pins")
	path := filepath.Join(dir, "mnt")
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	switch {
	case err == nil && isMountNS(fd):
		return &pins{dir: dir, path: path, fd: fd}, nil
	case err == nil:
		unix.Close(fd) // the file without its mount: the namespace is gone
	case !errors.Is(err, unix.ENOENT):
		return nil, fmt.Errorf("pin namespace: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pin namespace: %w", err)
	}
	// A private mount of its own (made a mount first if it is none yet).
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); errors.Is(err, unix.EINVAL) {
		if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
			return nil, fmt.Errorf("pin namespace: %w", err)
		}
		err = unix.Mount("", dir, "", unix.MS_PRIVATE, "")
		if err != nil {
			return nil, fmt.Errorf("pin namespace: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("pin namespace: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o400)
	if err != nil {
		return nil, fmt.Errorf("pin namespace: %w", err)
	}
	f.Close()
	fd, err = newPinNS(stateDir)
	if err != nil {
		return nil, fmt.Errorf("pin namespace: %w", err)
	}
	// Allowed: the namespace is newer than ours, so this cannot loop.
	if err := unix.Mount("/proc/self/fd/"+strconv.Itoa(fd), path, "", unix.MS_BIND, ""); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pin namespace: bind: %w", err)
	}
	return &pins{dir: dir, path: path, fd: fd}, nil
}

func isMountNS(fd int) bool {
	t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	return err == nil && t == unix.CLONE_NEWNS
}

// newPinNS makes the pin namespace and returns an fd of it. Its root is a
// tmpfs mounted (in it only) on dir, which any directory would do for.
func newPinNS(dir string) (int, error) {
	var fd int
	var err error
	onThrowawayThread(func() { fd, err = makePinNS(dir) })
	return fd, err
}

func makePinNS(dir string) (int, error) {
	if err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
		return -1, fmt.Errorf("unshare: %w", err)
	}
	// Nothing propagates in or out.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return -1, fmt.Errorf("make private: %w", err)
	}
	fd, err := unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	err = func() error {
		if err := unix.Mount("skiff-pins", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700"); err != nil {
			return fmt.Errorf("tmpfs: %w", err)
		}
		if err := unix.Chdir(dir); err != nil {
			return err
		}
		// The tmpfs becomes the root; the copy of the host's mount table
		// goes, so the namespace holds no host file system busy.
		if err := unix.PivotRoot(".", "."); err != nil {
			return fmt.Errorf("pivot_root: %w", err)
		}
		if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
			return fmt.Errorf("detach the old root: %w", err)
		}
		return unix.Chdir("/")
	}()
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// in runs fn on a throwaway OS thread inside the pin namespace, with "/"
// its root.
func (p *pins) in(fn func() error) error {
	var err error
	onThrowawayThread(func() {
		if err = unix.Unshare(unix.CLONE_FS); err != nil {
			err = fmt.Errorf("pin namespace: unshare: %w", err)
			return
		}
		if err = unix.Setns(p.fd, unix.CLONE_NEWNS); err != nil {
			err = fmt.Errorf("pin namespace: enter: %w", err)
			return
		}
		err = fn()
	})
	return err
}

// nsFD is an open namespace to pin.
type nsFD struct {
	name string // net, ipc, uts, user
	fd   int
}

// pin pins the namespaces of fds at /<key>/<name>.
func (p *pins) pin(key string, fds []nsFD) error {
	return p.in(func() error {
		dir := "/" + key
		if err := unix.Mkdir(dir, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("pin %s: %w", key, err)
		}
		for _, ns := range fds {
			target := dir + "/" + ns.name
			f, err := unix.Open(target, unix.O_CREAT|unix.O_RDONLY|unix.O_CLOEXEC, 0o400)
			if err != nil {
				return fmt.Errorf("pin %s: %w", target, err)
			}
			unix.Close(f)
			// A detached bind mount of the nsfs file, attached here.
			t, err := unix.OpenTree(ns.fd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
			if err != nil {
				return fmt.Errorf("pin %s: open_tree: %w", target, err)
			}
			err = unix.MoveMount(t, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH)
			unix.Close(t)
			if err != nil {
				return fmt.Errorf("pin %s: move_mount: %w", target, err)
			}
		}
		return nil
	})
}

// open opens the pins of key, in the order of names.
func (p *pins) open(key string, names ...string) ([]*os.File, error) {
	files := make([]*os.File, 0, len(names))
	err := p.in(func() error {
		for _, n := range names {
			target := "/" + key + "/" + n
			fd, err := unix.Open(target, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err == nil && !isNSFS(fd) {
				unix.Close(fd)
				err = unix.ENOENT // the file without its pin
			}
			if err != nil {
				return fmt.Errorf("open namespace %s: %w", target, err)
			}
			files = append(files, os.NewFile(uintptr(fd), target))
		}
		return nil
	})
	if err != nil {
		for _, f := range files {
			f.Close()
		}
		return nil, err
	}
	return files, nil
}

func isNSFS(fd int) bool {
	var st unix.Statfs_t
	return unix.Fstatfs(fd, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// unpin removes the pins of key (each as often as it is stacked) and their
// directory. Unpinning what is not pinned is not an error.
func (p *pins) unpin(key string) error {
	return p.in(func() error {
		dir := "/" + key
		ents, err := os.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("unpin %s: %w", key, err)
		}
		var errs []error
		for _, e := range ents {
			target := dir + "/" + e.Name()
			for range 8 {
				if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
					if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
						errs = append(errs, fmt.Errorf("unpin %s: %w", target, err))
					}
					break
				}
			}
			if err := unix.Unlink(target); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("unpin %s: %w", target, err))
			}
		}
		if len(errs) == 0 {
			if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("unpin %s: %w", key, err))
			}
		}
		return errors.Join(errs...)
	})
}

// keys lists the sandboxes that have pins.
func (p *pins) keys() (map[string]bool, error) {
	out := map[string]bool{}
	err := p.in(func() error {
		ents, err := os.ReadDir("/")
		if err != nil {
			return err
		}
		for _, e := range ents {
			out[e.Name()] = true
		}
		return nil
	})
	return out, err
}

// close closes the runtime's handle; with release, it also removes the
// namespace's own pin and its mount (the namespace goes with the last
// handle).
func (p *pins) close(release bool) error {
	unix.Close(p.fd)
	if !release {
		return nil
	}
	var errs []error
	for _, mp := range []string{p.path, p.dir} {
		for range 8 { // stacked by concurrent runtimes, in theory
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
				if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
					errs = append(errs, fmt.Errorf("pin namespace: %w", err))
				}
				break
			}
		}
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(p.dir); err != nil {
			errs = append(errs, fmt.Errorf("pin namespace: %w", err))
		}
	}
	return errors.Join(errs...)
}

// openNS opens namespaces of a sandbox, wherever they are pinned.
func (r *Runtime) openNS(sb *sbox, names ...string) ([]*os.File, error) {
	if !sb.legacyPins {
		return r.pins.open(sb.key, names...)
	}
	files := make([]*os.File, 0, len(names))
	for _, n := range names {
		f, err := os.Open(filepath.Join(sb.dir, "ns", n))
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, fmt.Errorf("open namespace: %w", err)
		}
		files = append(files, f)
	}
	return files, nil
}

// name is how messages name a sandbox: its group's ID, else its key.
func (sb *sbox) name() string {
	if sb.id != "" {
		return sb.id
	}
	return sb.key
}
