package linux

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiffhq/skiff/internal/sandbox"
)

// Shared pid namespaces (SandboxConfig.SharePID). The namespace's pid 1 is
// a pause process: this binary, which never starts the Go runtime (see
// skiff_pause in lockdown.c), chrooted into an empty directory, reaping
// the orphans of the group's containers. Containers are started into its
// namespace instead of a new one of their own.

// pauseName is the pause's cgroup under the sandbox's; container names
// cannot start with a dot.
const pauseName = ".pause"

func (r *Runtime) startPause(sb *sbox) error {
	root := filepath.Join(sb.dir, "pause")
	if err := os.Mkdir(root, 0o555); err != nil && !os.IsExist(err) {
		return fmt.Errorf("pause: %w", err)
	}
	rel := cgroupRel(sb.key, pauseName)
	if err := r.cg.create(rel, 0, 0, 0, false); err != nil {
		return err
	}
	pidfd := -1
	pid, _, err := syscall.StartProcess("/proc/self/exe", []string{"skiff-pause"}, &syscall.ProcAttr{
		Env:   []string{"_SKIFF_PAUSE=" + root},
		Files: []uintptr{r.devnull.Fd(), r.devnull.Fd(), r.devnull.Fd()},
		Sys:   &syscall.SysProcAttr{Setsid: true, Cloneflags: unix.CLONE_NEWPID, PidFD: &pidfd},
	})
	if err != nil {
		return fmt.Errorf("%w: start pause: %v", sandbox.ErrUnavailable, err)
	}
	defer unix.Close(pidfd)
	ticks, _, err := procStartTicks(pid)
	if err == nil {
		err = r.cg.addProc(rel, pid)
	}
	if err != nil {
		_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
		reapPidfd(pidfd)
		return fmt.Errorf("%w: pause: %v", sandbox.ErrUnavailable, err)
	}
	sb.st.PausePID, sb.st.PauseTicks = pid, ticks
	return nil
}

// killPause kills the pause process if it is still the one recorded, and
// reaps it if it is our child.
func killPause(pid int, ticks uint64) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return
	}
	defer unix.Close(pidfd)
	if t, _, err := procStartTicks(pid); err != nil || t != ticks {
		return
	}
	_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
	reapPidfd(pidfd)
}

// reapPidfd waits (briefly) for the process to end and reaps it if it is
// our child.
func reapPidfd(pidfd int) {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if n, _ := unix.Poll(fds, 100); n > 0 {
			break
		}
	}
	var si unix.Siginfo
	_ = unix.Waitid(unix.P_PIDFD, pidfd, &si, unix.WEXITED|unix.WNOHANG, nil)
}

// openPause returns a pidfd of the sandbox's pause process.
func openPause(st *sandboxState) (int, error) {
	pidfd, err := unix.PidfdOpen(st.PausePID, 0)
	if err == nil {
		if t, exited, terr := procStartTicks(st.PausePID); terr != nil || exited || t != st.PauseTicks {
			unix.Close(pidfd)
			err = fmt.Errorf("pid %d is not the pause process", st.PausePID)
		}
	}
	if err != nil {
		return -1, fmt.Errorf("%w: the shared pid namespace is gone: %v", sandbox.ErrUnavailable, err)
	}
	return pidfd, nil
}

// inPidNS runs fn on a throwaway OS thread whose children are born in the
// pid namespace of pidfd (setns(CLONE_NEWPID) changes only that).
func inPidNS(pidfd int, fn func() error) error {
	var err error
	onThrowawayThread(func() {
		if err = unix.Setns(pidfd, unix.CLONE_NEWPID); err != nil {
			err = fmt.Errorf("join the shared pid namespace: %w", err)
			return
		}
		err = fn()
	})
	return err
}
