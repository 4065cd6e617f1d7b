package linux

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiffhq/skiff/internal/sandbox"
)

// The stdio relay (relay.c) of containers started with TTY or Stdin: a
// small C process, detached from the runtime, that holds the pty master or
// the stdin pipe, writes the output to the log and serves one attached
// client on attachSock in the container's directory.

const (
	relayEnv   = "_SKIFF_RELAY"
	attachSock = "attach.sock"

	relayData   byte = 0
	relayResize byte = 1
	relayClose  byte = 2

	maxRelayFrame = 0xffff
)

var _ sandbox.Attacher = (*Runtime)(nil)

// sockPath returns a path for the socket name in dir that fits in a
// sockaddr_un whatever the length of dir: through /proc/self/fd of an
// O_PATH descriptor, which the caller closes.
func sockPath(dir, name string) (string, int, error) {
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", -1, err
	}
	return fmt.Sprintf("/proc/self/fd/%d/%s", dfd, name), dfd, nil
}

func listenAttach(dir string) (*os.File, error) {
	_ = os.Remove(filepath.Join(dir, attachSock))
	p, dfd, err := sockPath(dir, attachSock)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dfd)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: p}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind attach socket: %w", err)
	}
	if err := unix.Listen(fd, 4); err != nil {
		unix.Close(fd)
		return nil, err
	}
	_ = os.Chmod(filepath.Join(dir, attachSock), 0o600)
	return os.NewFile(uintptr(fd), attachSock), nil
}

func dialAttach(dir string) (net.Conn, error) {
	p, dfd, err := sockPath(dir, attachSock)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dfd)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: p}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), attachSock)
	defer f.Close()
	return net.FileConn(f)
}

// startRelay starts the relay of c with in, out (see relay.c) and the log,
// and records its pid in c.st.
func (r *Runtime) startRelay(c *ctr, tty bool, in, out, logf *os.File) error {
	ln, err := listenAttach(c.dir)
	if err != nil {
		return fmt.Errorf("%w: attach socket: %v", sandbox.ErrUnavailable, err)
	}
	defer ln.Close()
	mode := "pipe"
	if tty {
		mode = "tty"
	}
	dn := r.devnull.Fd()
	pid, _, err := syscall.StartProcess("/proc/self/exe", []string{"skiff-relay"}, &syscall.ProcAttr{
		Env:   []string{relayEnv + "=" + mode},
		Files: []uintptr{dn, dn, dn, in.Fd(), out.Fd(), logf.Fd(), ln.Fd()},
		// Own session, no Pdeathsig: it outlives the runtime, as the
		// workload does.
		Sys: &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		return fmt.Errorf("%w: start relay: %v", sandbox.ErrUnavailable, err)
	}
	// Reap it when it ends (it is our child until we die).
	go func() {
		var ws unix.WaitStatus
		for {
			if _, err := unix.Wait4(pid, &ws, 0, nil); err != unix.EINTR {
				return
			}
		}
	}()
	ticks, _, err := procStartTicks(pid)
	if err != nil {
		_ = unix.Kill(pid, unix.SIGKILL)
		return fmt.Errorf("%w: relay: %v", sandbox.ErrUnavailable, err)
	}
	c.st.RelayPID, c.st.RelayTicks = pid, ticks
	return nil
}

// endRelay waits up to wait for the relay of c to end by itself (it does
// once the workload's output ends, after copying what is left of it), then
// kills it.
func endRelay(c *ctr, wait time.Duration) {
	c.mu.Lock()
	pid, ticks := c.st.RelayPID, c.st.RelayTicks
	c.mu.Unlock()
	if pid == 0 {
		return
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err == nil {
		if t, exited, err := procStartTicks(pid); err == nil && t == ticks && !exited {
			fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
			if n, _ := unix.Poll(fds, int(wait/time.Millisecond)); n <= 0 {
				_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
				reapPidfd(pidfd)
			}
		}
		unix.Close(pidfd)
	}
	_ = os.Remove(filepath.Join(c.dir, attachSock))
}

// sendGo sends the init stage's "go" byte on sock, with the fd tty (if >=
// 0) attached.
func sendGo(sock *os.File, tty int) error {
	if tty < 0 {
		_, err := sock.Write([]byte{'g'})
		return err
	}
	rc, err := sock.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = unix.Sendmsg(int(fd), []byte{'g'}, unix.UnixRights(tty), nil, 0)
		return serr != unix.EAGAIN
	}); err != nil {
		return err
	}
	return serr
}

// Attach implements sandbox.Attacher: it connects to the relay of a
// container started with TTY or Stdin, copies cfg.Stdin to the workload
// (with Stdin) and its output to cfg.Stdout, until the workload ends or
// ctx is done. Stdin's EOF does not close the workload's stdin.
func (r *Runtime) Attach(ctx context.Context, sandboxID, name string, cfg sandbox.AttachConfig) error {
	c, err := r.container(sandboxID, name)
	if err != nil {
		return err
	}
	c.mu.Lock()
	running, tty, stdin, relay := c.st.Running, c.st.TTY, c.st.Stdin, c.st.RelayPID
	c.mu.Unlock()
	if !running {
		return fmt.Errorf("%w: container %q", sandbox.ErrNotRunning, name)
	}
	if relay == 0 {
		return fmt.Errorf("%w: container %q was not started with tty or stdin", sandbox.ErrInvalid, name)
	}
	conn, err := dialAttach(c.dir)
	if err != nil {
		return fmt.Errorf("%w: attach to %q: %v", sandbox.ErrNotRunning, name, err)
	}
	defer conn.Close()
	done := make(chan struct{})
	defer close(done)
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	var wmu sync.Mutex
	frame := func(typ byte, p []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		b := make([]byte, 3+len(p))
		b[0] = typ
		binary.BigEndian.PutUint16(b[1:], uint16(len(p)))
		copy(b[3:], p)
		_, err := conn.Write(b)
		return err
	}
	if cfg.Stdin != nil && (stdin || tty) {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, rerr := cfg.Stdin.Read(buf)
				for p := buf[:n]; len(p) > 0; {
					k := min(len(p), maxRelayFrame)
					if frame(relayData, p[:k]) != nil {
						return
					}
					p = p[k:]
				}
				if rerr != nil {
					return
				}
				select {
				case <-done:
					return
				default:
				}
			}
		}()
	}
	if cfg.Resize != nil && tty {
		go func() {
			for {
				select {
				case <-done:
					return
				case sz, ok := <-cfg.Resize:
					if !ok {
						return
					}
					var b [4]byte
					binary.BigEndian.PutUint16(b[0:], sz.Rows)
					binary.BigEndian.PutUint16(b[2:], sz.Cols)
					if frame(relayResize, b[:]) != nil {
						return
					}
				}
			}
		}()
	}
	out := cfg.Stdout
	if out == nil {
		out = io.Discard
	}
	_, err = io.Copy(out, conn)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("attach: %w", err)
	}
	return nil
}
