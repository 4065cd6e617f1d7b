package linux

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// groupNamespaces are the namespaces a sandbox's containers share. Each is
// kept alive, with no process in it, by a bind mount of its nsfs file.
var groupNamespaces = []struct {
	name string
	flag int
}{{"net", unix.CLONE_NEWNET}, {"ipc", unix.CLONE_NEWIPC}, {"uts", unix.CLONE_NEWUTS}}

// createNamespaces makes new net, ipc and uts namespaces, pins them at
// dir/{net,ipc,uts}, sets the hostname and brings loopback up.
//
// It unshares on a goroutine locked to its OS thread and lets that
// goroutine exit still locked: the Go runtime then ends the thread, so no
// other goroutine ever runs in the new namespaces and nothing needs
// restoring (which could fail half-way).
func createNamespaces(dir, hostname string) error {
	for _, ns := range groupNamespaces {
		f, err := os.OpenFile(filepath.Join(dir, ns.name), os.O_CREATE|os.O_RDONLY|os.O_EXCL, 0o444)
		if err != nil {
			return fmt.Errorf("namespace file: %w", err)
		}
		f.Close()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked, see above
		errc <- inNewNamespaces(dir, hostname)
	}()
	return <-errc
}

func inNewNamespaces(dir, hostname string) error {
	if err := unix.Unshare(unix.CLONE_NEWNET | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	if err := unix.Sethostname([]byte(hostname)); err != nil {
		return fmt.Errorf("sethostname: %w", err)
	}
	if err := loopbackUp(); err != nil {
		return err
	}
	// Every port may be bound by any user, as Docker does: a container's
	// root has NET_BIND_SERVICE only in its own user namespace, which does
	// not own this network namespace. /proc/sys/net is this thread's.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_unprivileged_port_start", []byte("0"), 0); err != nil {
		return fmt.Errorf("unprivileged ports: %w", err)
	}
	for _, ns := range groupNamespaces {
		if err := unix.Mount("/proc/thread-self/ns/"+ns.name, filepath.Join(dir, ns.name), "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("pin %s namespace: %w", ns.name, err)
		}
	}
	return nil
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}

// inNetns runs fn on a throwaway OS thread inside the network namespace
// pinned at path (same thread discipline as createNamespaces).
func inNetns(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with us
		if err := setnsPath(path, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}
