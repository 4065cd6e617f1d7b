// Package sim is a simulated sandbox.Runtime: no processes, no kernel
// objects, just state in memory (optionally mirrored to a file so that a new
// Runtime recovers it). Control-plane and agent scale tests use it to run
// thousands of groups on one machine.
package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/skiffhq/skiff/internal/sandbox"
)

// Config shapes the simulation.
type Config struct {
	// StartLatency is how long StartContainer takes.
	StartLatency time.Duration
	// Exit, when set, decides whether a container ends by itself: after
	// the given time, with the given code. Otherwise containers run until
	// stopped (and stopping exits 137, as after SIGKILL).
	Exit func(sandboxID string, cfg sandbox.ContainerConfig) (after time.Duration, code int, ok bool)
	// ExecError, when set, is what Exec returns; otherwise Exec writes its
	// arguments, space-separated, to Stdout and returns 0.
	ExecError error
	// Usage is the resource use reported per running container.
	Usage sandbox.ContainerStats
	// StateFile, when set, keeps the state across Runtime instances:
	// simulated containers "survive" a restart of the agent.
	StateFile string
}

// Runtime is the simulated runtime.
type Runtime struct {
	cfg   Config
	mu    sync.Mutex
	sbs   map[string]*simSandbox
	pool  map[string][]simPrepared // by class
	pid   int
	seq   int // addresses handed out
	exits chan sandbox.ExitEvent
	queue []sandbox.ExitEvent
	wake  chan struct{}
	stop  chan struct{}
	done  chan struct{}
}

type simSandbox struct {
	ID         string
	IP         string
	FromPool   bool `json:",omitempty"`
	Containers map[string]*simContainer
	// Volumes holds each volume's kind and, for files volumes, the files
	// (volumes.go).
	Volumes map[string]*simVolume `json:",omitempty"`
}

// simPrepared is a prepared sandbox (sandbox.Pool): just an address.
type simPrepared struct {
	Key string
	IP  string
}

// simState is what StateFile holds.
type simState struct {
	PID       int
	Seq       int
	Sandboxes map[string]*simSandbox
	Pool      map[string][]simPrepared
}

type simContainer struct {
	Name      string
	PID       int
	Running   bool
	StartedAt time.Time
	Exit      *sandbox.ExitEvent
	Log       []byte
	Previous  []byte
	HasPrev   bool
	timer     *time.Timer
	ended     chan struct{}
}

var (
	_ sandbox.Runtime = (*Runtime)(nil)
	_ sandbox.Pool    = (*Runtime)(nil)
)

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)

// New makes a simulated runtime, loading cfg.StateFile if it exists.
func New(cfg Config) (*Runtime, error) {
	r := &Runtime{
		cfg: cfg, sbs: map[string]*simSandbox{}, pool: map[string][]simPrepared{}, pid: 1000,
		exits: make(chan sandbox.ExitEvent), wake: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	if cfg.StateFile != "" {
		b, err := os.ReadFile(cfg.StateFile)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		if len(b) > 0 {
			var st simState
			if err := json.Unmarshal(b, &st); err != nil {
				return nil, fmt.Errorf("sim state: %w", err)
			}
			r.pid, r.seq, r.sbs = st.PID, st.Seq, st.Sandboxes
			if r.sbs == nil {
				r.sbs = map[string]*simSandbox{}
			}
			if st.Pool != nil {
				r.pool = st.Pool
			}
			for _, sb := range r.sbs {
				for _, c := range sb.Containers {
					c.ended = make(chan struct{})
					if !c.Running {
						close(c.ended)
					}
				}
			}
		}
	}
	go r.deliver()
	return r, nil
}

// Name implements sandbox.Runtime.
func (r *Runtime) Name() string { return "sim" }

// Exits implements sandbox.Runtime.
func (r *Runtime) Exits() <-chan sandbox.ExitEvent { return r.exits }

// Close implements sandbox.Runtime.
func (r *Runtime) Close() error {
	r.mu.Lock()
	select {
	case <-r.stop:
		r.mu.Unlock()
		return nil
	default:
	}
	for _, sb := range r.sbs {
		for _, c := range sb.Containers {
			if c.timer != nil {
				c.timer.Stop()
			}
		}
	}
	close(r.stop)
	r.mu.Unlock()
	<-r.done
	return nil
}

func (r *Runtime) deliver() {
	defer close(r.done)
	defer close(r.exits)
	for {
		r.mu.Lock()
		var ev *sandbox.ExitEvent
		if len(r.queue) > 0 {
			ev = &r.queue[0]
			r.queue = r.queue[1:]
		}
		r.mu.Unlock()
		if ev == nil {
			select {
			case <-r.wake:
				continue
			case <-r.stop:
				return
			}
		}
		select {
		case r.exits <- *ev:
		case <-r.stop:
			return
		}
	}
}

// save mirrors the state to StateFile; r.mu held.
func (r *Runtime) save() {
	if r.cfg.StateFile == "" {
		return
	}
	b, _ := json.Marshal(simState{PID: r.pid, Seq: r.seq, Sandboxes: r.sbs, Pool: r.pool})
	tmp := r.cfg.StateFile + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		_ = os.Rename(tmp, r.cfg.StateFile)
	}
}

func (r *Runtime) closed() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// CreateSandbox implements sandbox.Runtime.
func (r *Runtime) CreateSandbox(ctx context.Context, cfg sandbox.SandboxConfig) (*sandbox.SandboxInfo, error) {
	if !nameRE.MatchString(cfg.ID) {
		return nil, fmt.Errorf("%w: sandbox ID %q", sandbox.ErrInvalid, cfg.ID)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed() {
		return nil, sandbox.ErrUnavailable
	}
	sb := r.sbs[cfg.ID]
	if sb == nil {
		sb = &simSandbox{ID: cfg.ID, Containers: map[string]*simContainer{}, Volumes: simVolumes(cfg.Volumes)}
		if p, ok := r.takePrepared(cfg.PoolClass); ok {
			sb.IP, sb.FromPool = p.IP, true
		} else {
			sb.IP = r.nextIP()
		}
		r.sbs[cfg.ID] = sb
		r.save()
	}
	return &sandbox.SandboxInfo{ID: sb.ID, IP: sb.IP, FromPool: sb.FromPool}, nil
}

// nextIP hands out a fresh address; r.mu held.
func (r *Runtime) nextIP() string {
	r.seq++
	return fmt.Sprintf("10.%d.%d.%d", (r.seq>>16)&255, (r.seq>>8)&255, r.seq&255)
}

// takePrepared takes a prepared sandbox of class, else of any class
// (class "": none); r.mu held.
func (r *Runtime) takePrepared(class string) (simPrepared, bool) {
	if class == "" {
		return simPrepared{}, false
	}
	if len(r.pool[class]) == 0 {
		class = ""
		for c, l := range r.pool {
			if len(l) > len(r.pool[class]) {
				class = c
			}
		}
	}
	l := r.pool[class]
	if len(l) == 0 {
		return simPrepared{}, false
	}
	p := l[len(l)-1]
	if len(l) == 1 {
		delete(r.pool, class)
	} else {
		r.pool[class] = l[:len(l)-1]
	}
	return p, true
}

// PrepareSandbox implements sandbox.Pool.
func (r *Runtime) PrepareSandbox(ctx context.Context, class sandbox.PoolClass) error {
	if class.Name == "" {
		return fmt.Errorf("%w: pool class without a name", sandbox.ErrInvalid)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed() {
		return sandbox.ErrUnavailable
	}
	r.pool[class.Name] = append(r.pool[class.Name], simPrepared{Key: fmt.Sprintf("_p%d", r.seq+1), IP: r.nextIP()})
	r.save()
	return nil
}

// DrainPool implements sandbox.Pool.
func (r *Runtime) DrainPool(ctx context.Context, class string, n int) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed() {
		return 0, sandbox.ErrUnavailable
	}
	removed := 0
	for c, l := range r.pool {
		if class != "" && c != class {
			continue
		}
		k := len(l)
		if n >= 0 {
			k = min(k, n-removed)
		}
		removed += k
		if k == len(l) {
			delete(r.pool, c)
		} else {
			r.pool[c] = l[:len(l)-k]
		}
	}
	r.save()
	return removed, nil
}

// PoolStats implements sandbox.Pool.
func (r *Runtime) PoolStats() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.pool))
	for c, l := range r.pool {
		out[c] = len(l)
	}
	return out
}

func (r *Runtime) container(sandboxID, name string) (*simSandbox, *simContainer, error) {
	if r.closed() {
		return nil, nil, sandbox.ErrUnavailable
	}
	sb := r.sbs[sandboxID]
	if sb == nil {
		return nil, nil, fmt.Errorf("%w: sandbox %q", sandbox.ErrNotFound, sandboxID)
	}
	c := sb.Containers[name]
	if c == nil {
		return sb, nil, fmt.Errorf("%w: container %q", sandbox.ErrNotFound, name)
	}
	return sb, c, nil
}

// StartContainer implements sandbox.Runtime.
func (r *Runtime) StartContainer(ctx context.Context, sandboxID string, cfg sandbox.ContainerConfig) (*sandbox.ContainerInfo, error) {
	if !nameRE.MatchString(cfg.Name) || len(cfg.Args) == 0 {
		return nil, fmt.Errorf("%w: container %q", sandbox.ErrInvalid, cfg.Name)
	}
	if r.cfg.StartLatency > 0 {
		select {
		case <-time.After(r.cfg.StartLatency):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	sb, prev, err := r.container(sandboxID, cfg.Name)
	if sb == nil {
		return nil, err
	}
	c := &simContainer{Name: cfg.Name, Running: true, StartedAt: time.Now(), ended: make(chan struct{})}
	if prev != nil {
		if prev.Running {
			return nil, fmt.Errorf("%w: container %q is running", sandbox.ErrExists, cfg.Name)
		}
		c.Previous, c.HasPrev = prev.Log, true
	}
	r.pid++
	c.PID = r.pid
	c.Log = fmt.Appendf(nil, "sim: %s\n", strings.Join(cfg.Args, " "))
	sb.Containers[cfg.Name] = c
	if r.cfg.Exit != nil {
		if after, code, ok := r.cfg.Exit(sandboxID, cfg); ok {
			c.timer = time.AfterFunc(after, func() {
				r.mu.Lock()
				defer r.mu.Unlock()
				r.end(sb, c, code, 0)
			})
		}
	}
	r.save()
	return &sandbox.ContainerInfo{Name: c.Name, PID: c.PID, StartedAt: c.StartedAt}, nil
}

// end records an exit; r.mu held.
func (r *Runtime) end(sb *simSandbox, c *simContainer, code, sig int) {
	if !c.Running || r.closed() {
		return
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	ev := sandbox.ExitEvent{SandboxID: sb.ID, Name: c.Name, PID: c.PID, ExitCode: code, Signal: sig, FinishedAt: time.Now()}
	c.Running, c.Exit = false, &ev
	close(c.ended)
	r.queue = append(r.queue, ev)
	select {
	case r.wake <- struct{}{}:
	default:
	}
	r.save()
}

// StopContainer implements sandbox.Runtime: a simulated workload dies at
// once, as if it ignored SIGTERM and got SIGKILL.
func (r *Runtime) StopContainer(ctx context.Context, sandboxID, name string, grace time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	sb, c, err := r.container(sandboxID, name)
	if err != nil {
		return err
	}
	r.end(sb, c, 137, 9)
	return nil
}

// RemoveSandbox implements sandbox.Runtime.
func (r *Runtime) RemoveSandbox(ctx context.Context, sandboxID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed() {
		return sandbox.ErrUnavailable
	}
	sb := r.sbs[sandboxID]
	if sb == nil {
		return nil
	}
	for _, c := range sb.Containers {
		r.end(sb, c, 137, 9)
	}
	delete(r.sbs, sandboxID)
	r.save()
	return nil
}

// Exec implements sandbox.Runtime.
func (r *Runtime) Exec(ctx context.Context, sandboxID, name string, cfg sandbox.ExecConfig) (int, error) {
	if len(cfg.Args) == 0 {
		return -1, fmt.Errorf("%w: exec: no command", sandbox.ErrInvalid)
	}
	r.mu.Lock()
	_, c, err := r.container(sandboxID, name)
	running := c != nil && c.Running
	r.mu.Unlock()
	if err != nil {
		return -1, err
	}
	if !running {
		return -1, fmt.Errorf("%w: container %q", sandbox.ErrNotRunning, name)
	}
	if r.cfg.ExecError != nil {
		return -1, r.cfg.ExecError
	}
	if cfg.Stdout != nil {
		if _, err := io.WriteString(cfg.Stdout, strings.Join(cfg.Args, " ")+"\n"); err != nil {
			return -1, err
		}
	}
	return 0, nil
}

// Logs implements sandbox.Runtime; Since and Timestamps are ignored (a
// simulated container writes one line when it starts).
func (r *Runtime) Logs(ctx context.Context, sandboxID, name string, opts sandbox.LogOptions) (io.ReadCloser, error) {
	r.mu.Lock()
	_, c, err := r.container(sandboxID, name)
	if err != nil {
		r.mu.Unlock()
		return nil, err
	}
	data, ended := c.Log, c.ended
	if opts.Previous {
		if !c.HasPrev {
			r.mu.Unlock()
			return nil, fmt.Errorf("%w: no previous log for %q", sandbox.ErrNotFound, name)
		}
		data, opts.Follow = c.Previous, false
	}
	r.mu.Unlock()
	if opts.Tail >= 0 {
		lines := bytes.SplitAfter(data, []byte("\n"))
		if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
			lines = lines[:len(lines)-1]
		}
		data = bytes.Join(lines[max(0, len(lines)-opts.Tail):], nil)
	}
	if !opts.Follow {
		return io.NopCloser(bytes.NewReader(data)), nil
	}
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write(data)
		select {
		case <-ended:
		case <-ctx.Done():
		}
		pw.Close()
	}()
	return pr, nil
}

// Stats implements sandbox.Runtime: Config.Usage per running container.
func (r *Runtime) Stats(ctx context.Context, sandboxID string) (*sandbox.Stats, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed() {
		return nil, sandbox.ErrUnavailable
	}
	sb := r.sbs[sandboxID]
	if sb == nil {
		return nil, fmt.Errorf("%w: sandbox %q", sandbox.ErrNotFound, sandboxID)
	}
	st := &sandbox.Stats{Time: time.Now(), Containers: map[string]sandbox.ContainerStats{}}
	for name, c := range sb.Containers {
		var u sandbox.ContainerStats
		if c.Running {
			u = r.cfg.Usage
		}
		st.Containers[name] = u
		st.CPUNanos += u.CPUNanos
		st.MemoryUsed += u.MemoryUsed
		st.Pids += u.Pids
	}
	return st, nil
}

// Recover implements sandbox.Runtime.
func (r *Runtime) Recover(ctx context.Context) ([]sandbox.SandboxState, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed() {
		return nil, sandbox.ErrUnavailable
	}
	out := make([]sandbox.SandboxState, 0, len(r.sbs))
	for _, sb := range r.sbs {
		s := sandbox.SandboxState{ID: sb.ID, IP: sb.IP}
		for _, c := range sb.Containers {
			cs := sandbox.ContainerState{Name: c.Name, PID: c.PID, Running: c.Running, StartedAt: c.StartedAt}
			if c.Exit != nil {
				ev := *c.Exit
				cs.Exit = &ev
			}
			s.Containers = append(s.Containers, cs)
		}
		sort.Slice(s.Containers, func(i, j int) bool { return s.Containers[i].Name < s.Containers[j].Name })
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
