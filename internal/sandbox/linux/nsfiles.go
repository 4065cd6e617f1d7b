package linux

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// groupNamespaces are the namespaces a sandbox's containers share. Each is
// kept alive, with no process in it, by a pin (see pinns.go).
var groupNamespaces = []struct {
	name string
	flag int
}{{"net", unix.CLONE_NEWNET}, {"ipc", unix.CLONE_NEWIPC}, {"uts", unix.CLONE_NEWUTS}}

// createNamespaces makes new net, ipc and uts namespaces, sets the
// hostname, brings loopback up and returns open fds of the three (in the
// order of groupNamespaces), for the caller to pin and close.
//
// It unshares on a throwaway thread (onThrowawayThread): no other
// goroutine ever runs in the new namespaces and nothing needs restoring
// (which could fail half-way).
func createNamespaces(hostname string) ([]nsFD, error) {
	var fds []nsFD
	var err error
	onThrowawayThread(func() { fds, err = inNewNamespaces(hostname) })
	return fds, err
}

// onThrowawayThread runs fn on an OS thread of its own that ends with fn:
// fn may leave it in other namespaces (or with its own root), and no
// goroutine ever runs there after it. The main thread is never used: it
// cannot end (Go parks it forever instead), and /proc/self is the main
// thread's view — its mount table, its network namespace.
func onThrowawayThread(fn func()) {
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked on the way out of fn
		if unix.Gettid() == unix.Getpid() {
			// Our lock keeps every other goroutine off this thread.
			onThrowawayThread(fn)
			runtime.UnlockOSThread()
			close(done)
			return
		}
		fn()
		close(done)
	}()
	<-done
}

func inNewNamespaces(hostname string) ([]nsFD, error) {
	if err := unix.Unshare(unix.CLONE_NEWNET | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS); err != nil {
		return nil, fmt.Errorf("unshare: %w", err)
	}
	if err := unix.Sethostname([]byte(hostname)); err != nil {
		return nil, fmt.Errorf("sethostname: %w", err)
	}
	if err := loopbackUp(); err != nil {
		return nil, err
	}
	// Every port may be bound by any user, as Docker does: a container's
	// root has NET_BIND_SERVICE only in its own user namespace, which does
	// not own this network namespace. /proc/sys/net is this thread's.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_unprivileged_port_start", []byte("0"), 0); err != nil {
		return nil, fmt.Errorf("unprivileged ports: %w", err)
	}
	var fds []nsFD
	for _, ns := range groupNamespaces {
		fd, err := unix.Open("/proc/thread-self/ns/"+ns.name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			closeNSFDs(fds)
			return nil, fmt.Errorf("open %s namespace: %w", ns.name, err)
		}
		fds = append(fds, nsFD{ns.name, fd})
	}
	return fds, nil
}

func closeNSFDs(fds []nsFD) {
	for _, f := range fds {
		unix.Close(f.fd)
	}
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

// inNS runs fn on a throwaway OS thread inside the namespace of fd (of
// type typ; same thread discipline as createNamespaces).
func inNS(fd, typ int, fn func() error) error {
	var err error
	onThrowawayThread(func() {
		if err = unix.Setns(fd, typ); err != nil {
			err = fmt.Errorf("join namespace: %w", err)
			return
		}
		err = fn()
	})
	return err
}
