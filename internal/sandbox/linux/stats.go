package linux

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiffhq/skiff/internal/sandbox"
)

// Stats implements sandbox.Runtime: CPU, memory and pids from the cgroups
// (memory is the cgroup's usage, page cache included), network bytes of
// every interface but loopback in the sandbox's network namespace.
func (r *Runtime) Stats(ctx context.Context, sandboxID string) (*sandbox.Stats, error) {
	sb, err := r.sandbox(sandboxID)
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	if sb.removed || !sb.st.Complete {
		sb.mu.Unlock()
		return nil, fmt.Errorf("%w: sandbox %q", sandbox.ErrNotFound, sandboxID)
	}
	type run struct {
		name string
		pid  int
	}
	var cs []run
	for name, c := range sb.containers {
		c.mu.Lock()
		pid := 0
		if c.st.Running {
			pid = c.st.PID
		}
		c.mu.Unlock()
		cs = append(cs, run{name, pid})
	}
	sb.mu.Unlock()

	s := &sandbox.Stats{Time: time.Now(), Containers: map[string]sandbox.ContainerStats{}}
	s.CPUNanos, s.MemoryUsed, s.Pids = r.cg.usage(sb.key)
	netPid := 0
	for _, c := range cs {
		var st sandbox.ContainerStats
		st.CPUNanos, st.MemoryUsed, st.Pids = r.cg.usage(cgroupRel(sb.key, c.name))
		s.Containers[c.name] = st
		if c.pid != 0 {
			netPid = c.pid
		}
	}
	// Through a process of the sandbox when there is one (no thread games),
	// else by entering the pinned namespace on a throwaway thread.
	var ok bool
	if netPid != 0 {
		s.RxBytes, s.TxBytes, ok = readNetDev("/proc/" + strconv.Itoa(netPid) + "/net/dev")
	}
	if !ok {
		if fs, err := r.openNS(sb, "net"); err == nil {
			_ = inNS(int(fs[0].Fd()), unix.CLONE_NEWNET, func() error {
				s.RxBytes, s.TxBytes, _ = readNetDev("/proc/thread-self/net/dev")
				return nil
			})
			fs[0].Close()
		}
	}
	return s, nil
}

// readNetDev sums the counters of /proc/net/dev, loopback excluded.
func readNetDev(path string) (rx, tx uint64, ok bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		name, rest, ok := strings.Cut(s.Text(), ":")
		if !ok || strings.TrimSpace(name) == "lo" {
			continue
		}
		fs := strings.Fields(rest)
		if len(fs) < 9 {
			continue
		}
		r, _ := strconv.ParseUint(fs[0], 10, 64)
		t, _ := strconv.ParseUint(fs[8], 10, 64)
		rx += r
		tx += t
	}
	return rx, tx, s.Err() == nil
}
