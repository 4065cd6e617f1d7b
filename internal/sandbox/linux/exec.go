package linux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"

	"github.com/skiffhq/skiff/internal/sandbox"
	"golang.org/x/sys/unix"
)

// Exec implements sandbox.Runtime. The command is started through the exec
// helper (nsenter.c): a re-exec of this binary that joins the container's
// cgroups and namespaces before the Go runtime starts, forks into its pid
// namespace and relays the command's exit status. The command gets the
// container's environment overlaid with cfg.Env, and the container's user.
func (r *Runtime) Exec(ctx context.Context, sandboxID, name string, cfg sandbox.ExecConfig) (int, error) {
	if len(cfg.Args) == 0 || cfg.Args[0] == "" {
		return -1, fmt.Errorf("%w: exec: no command", sandbox.ErrInvalid)
	}
	c, err := r.container(sandboxID, name)
	if err != nil {
		return -1, err
	}
	c.mu.Lock()
	running, pid, st := c.st.Running, c.st.PID, c.st
	c.mu.Unlock()
	if !running {
		return -1, fmt.Errorf("%w: container %q", sandbox.ErrNotRunning, name)
	}

	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Args = append([]string{"skiff-nsenter"}, cfg.Args...)
	cmd.Env = append(mergeEnv(st.Env, cfg.Env),
		nsenterEnv+"="+strconv.Itoa(pid),
		"_SKIFF_NSENTER_CGROUPS="+strings.Join(r.cg.selfJoinFiles(cgroupRel(c.sb.key, name)), ":"),
		"_SKIFF_NSENTER_UID="+strconv.FormatUint(uint64(st.UID), 10),
		"_SKIFF_NSENTER_GID="+strconv.FormatUint(uint64(st.GID), 10),
		// The same lockdown as the workload's (lockdown.c).
		"_SKIFF_NSENTER_CAPS="+strconv.FormatUint(defaultCaps, 16),
		"_SKIFF_NSENTER_SECCOMP="+seccompHex(),
	)
	if c.sb.st.HostID != 0 {
		cmd.Env = append(cmd.Env, "_SKIFF_NSENTER_USERNS=1")
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return -1, err
	}
	defer errR.Close()
	cmd.ExtraFiles = []*os.File{errW} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// The helper's output is the command's; do not wait for readers that
	// outlive it (a stdin reader blocked on a network peer).
	cmd.WaitDelay = time.Second

	var copies sync.WaitGroup
	var ptmx *os.File
	if cfg.TTY {
		var tty *os.File
		ptmx, tty, err = openContainerPTY(pid)
		if err != nil {
			errW.Close()
			return -1, fmt.Errorf("exec: open pty: %w", err)
		}
		defer ptmx.Close()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
		cmd.SysProcAttr.Setctty = true
		cmd.SysProcAttr.Ctty = 0
		defer tty.Close()
	} else {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = cfg.Stdin, cfg.Stdout, cfg.Stderr
	}
	err = cmd.Start()
	errW.Close()
	if err != nil {
		return -1, fmt.Errorf("%w: exec: %v", sandbox.ErrUnavailable, err)
	}
	if ptmx != nil {
		// Our copy of the slave must go, or reads never see EOF.
		cmd.Stdin.(*os.File).Close()
		if cfg.Stdin != nil {
			go func() { _, _ = io.Copy(ptmx, cfg.Stdin) }()
		}
		if cfg.Stdout != nil {
			copies.Add(1)
			go func() { defer copies.Done(); _, _ = io.Copy(cfg.Stdout, ptmx) }()
		}
		if cfg.Resize != nil {
			stop := make(chan struct{})
			var resizing sync.WaitGroup
			resizing.Add(1)
			// Runs before ptmx.Close (deferred earlier).
			defer func() { close(stop); resizing.Wait() }()
			go func() {
				defer resizing.Done()
				for {
					select {
					case sz, ok := <-cfg.Resize:
						if !ok {
							return
						}
						_ = pty.Setsize(ptmx, &pty.Winsize{Rows: sz.Rows, Cols: sz.Cols})
					case <-stop:
						return
					}
				}
			}()
		}
	}
	// Empty on success: the pipe closes on the command's exec.
	msg, _ := io.ReadAll(errR)
	werr := cmd.Wait()
	if ptmx != nil {
		waitTimeout(&copies, time.Second)
	}
	if len(msg) > 0 {
		return -1, fmt.Errorf("%w: %s", sandbox.ErrCannotRun, msg)
	}
	if ctx.Err() != nil {
		return -1, ctx.Err()
	}
	var ee *exec.ExitError
	if werr != nil && !errors.As(werr, &ee) && !errors.Is(werr, exec.ErrWaitDelay) {
		return -1, fmt.Errorf("exec: %w", werr)
	}
	return cmd.ProcessState.ExitCode(), nil
}

// mergeEnv overlays extra on base, by variable name.
func mergeEnv(base, extra []string) []string {
	out := make([]string, 0, len(base)+len(extra))
	idx := map[string]int{}
	for _, list := range [][]string{base, extra} {
		for _, kv := range list {
			k, _, _ := strings.Cut(kv, "=")
			if i, ok := idx[k]; ok {
				out[i] = kv
				continue
			}
			idx[k] = len(out)
			out = append(out, kv)
		}
	}
	return out
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// openContainerPTY opens a terminal pair on the container's own devpts
// instance, so the process sees a /dev/pts/N that exists inside the
// container (a host pty would be a dangling name there: `tty` says "not a
// tty"). The peer is opened with TIOCGPTPEER, which needs no path lookup.
func openContainerPTY(pid int) (ptmx, tty *os.File, err error) {
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/root/dev/pts/ptmx", pid), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	// TIOCGPTPEER takes the peer's open flags as its argument.
	peer, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(unix.TIOCGPTPEER), uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno != 0 {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("open pty peer: %w", errno)
	}
	return os.NewFile(uintptr(fd), "ptmx"), os.NewFile(peer, "pty"), nil
}
