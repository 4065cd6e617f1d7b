package linux

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/skiffhq/skiff/internal/sandbox"
)

// Network attaches a sandbox's network namespace to the host's pod network.
// internal/network implements it.
type Network interface {
	// Attach wires the network namespace that netnsPath opens and returns
	// the sandbox's IP. It is called once per sandbox, after the namespace
	// exists with loopback up. netnsPath is a /proc/self/fd/N path, valid
	// during the call only (the namespace is pinned where the host cannot
	// see it). sandboxID is the runtime's key for the sandbox: the group's
	// ID, or the pool key of a prepared sandbox, which stays its key once a
	// group claims it. Detach and Publish get the same key.
	Attach(ctx context.Context, sandboxID, netnsPath string) (ip string, err error)
	// Detach undoes Attach. Detaching an unknown sandbox is not an error.
	Detach(ctx context.Context, sandboxID string) error
}

// Publisher is a Network that can also publish host ports; a sandbox that
// asks for published ports needs one.
type Publisher interface {
	Publish(ctx context.Context, sandboxID string, ports []sandbox.Port) error
}

// Config configures a Runtime.
type Config struct {
	// StateDir holds the runtime's durable state, pinned namespaces,
	// writable layers and logs. Required. A new Runtime over the same
	// StateDir adopts what an earlier one left running.
	StateDir string
	// CgroupParent is the cgroup, relative to the hierarchy roots, under
	// which sandboxes go. Default "skiff".
	CgroupParent string
	// CgroupRoot is where the cgroup hierarchies are mounted. Default
	// /sys/fs/cgroup. Unified (v2) or v1 is detected there.
	CgroupRoot string
	// Network wires sandboxes to the pod network. Nil: each sandbox has
	// its own network namespace with loopback only, and IP "".
	Network Network
	// LogMaxBytes caps the disk space of each container log; older output
	// is dropped. Default 10 MiB; negative: no cap.
	LogMaxBytes int64
	// LogIndexInterval is the period of the log ticker, and so the
	// precision of log timestamps and Since. Default 1s.
	LogIndexInterval time.Duration
	// Logger gets what the runtime has to say that no caller asked for.
	// Default slog.Default().
	Logger *slog.Logger

	// NoUserNamespaces runs containers without a user namespace: their
	// root is the host's root (still without most capabilities, under
	// seccomp). Only for hosts where the image snapshots sit on a file
	// system without idmapped mounts, or kernels older than 5.19.
	NoUserNamespaces bool
	// IDMapBase and IDMapSlots define the pool of host ID ranges, 65536
	// IDs each, of which every sandbox gets one for its user namespace.
	// Default 0x10000000 and 16384 slots.
	IDMapBase  uint32
	IDMapSlots int
	// DefaultPids limits the processes of a sandbox whose config sets
	// no Pids. Default 4096; negative: no limit.
	DefaultPids int64
}

// Runtime is the Linux sandbox runtime. See the package documentation.
type Runtime struct {
	cfg     Config
	cg      *cgroups
	ids     *idPool
	w       *watcher
	exits   *exitQueue
	devnull *os.File
	log     *slog.Logger

	pins *pins
	// busy counts group work in flight (create, start, remove), which
	// PrepareSandbox lets go first.
	busy atomic.Int64

	mu        sync.Mutex
	sandboxes map[string]*sbox   // by group ID
	pool      map[string][]*sbox // prepared, by class
	doomed    []*sbox            // drained, whose removal failed

	tickStop chan struct{}
	tickDone chan struct{}
	closed   atomic.Bool
}

type sbox struct {
	id  string // the group's ID; "" while prepared
	key string // names its resources (see state.go); never changes
	dir string
	// legacyPins: pinned in the host mount namespace at dir/ns (a
	// sandbox made by an earlier version), not in the pin namespace.
	legacyPins bool
	// mu serialises the lifecycle of the sandbox and of its containers
	// (create, start, remove). Stop and Exec do not hold it while waiting.
	mu         sync.Mutex
	st         sandboxState
	containers map[string]*ctr
	removed    bool
}

// ctr is one instance of a container. A restart makes a new ctr.
type ctr struct {
	sb  *sbox
	dir string

	mu    sync.Mutex
	st    containerState
	pidfd int           // -1 once the instance ended
	done  chan struct{} // closed when the instance ended

	// Owned by the log ticker.
	logSize, logStart int64
}

var _ sandbox.Runtime = (*Runtime)(nil)

var errClosed = fmt.Errorf("%w: linux runtime is closed", sandbox.ErrUnavailable)

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)

// New makes a Runtime over cfg.StateDir and adopts the sandboxes an earlier
// Runtime left there (see Recover).
func New(cfg Config) (*Runtime, error) {
	if cfg.StateDir == "" {
		return nil, fmt.Errorf("%w: linux runtime: StateDir is required", sandbox.ErrInvalid)
	}
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = "skiff"
	}
	if cfg.CgroupRoot == "" {
		cfg.CgroupRoot = "/sys/fs/cgroup"
	}
	if cfg.LogMaxBytes == 0 {
		cfg.LogMaxBytes = 10 << 20
	}
	if cfg.LogIndexInterval <= 0 {
		cfg.LogIndexInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.IDMapBase == 0 {
		cfg.IDMapBase = defaultIDMapBase
	}
	if cfg.IDMapSlots <= 0 {
		cfg.IDMapSlots = defaultIDMapSlots
	}
	if uint64(cfg.IDMapBase)+uint64(cfg.IDMapSlots)*idRange > 1<<32-1 {
		return nil, fmt.Errorf("%w: linux runtime: ID map pool beyond 32 bits", sandbox.ErrInvalid)
	}
	if cfg.DefaultPids == 0 {
		cfg.DefaultPids = 4096
	}
	abs, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	cfg.StateDir = abs
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "sandboxes"), 0o711); err != nil {
		return nil, fmt.Errorf("linux runtime: %w", err)
	}
	cg, err := newCgroups(cfg.CgroupRoot, cfg.CgroupParent)
	if err != nil {
		return nil, fmt.Errorf("%w: linux runtime: %v", sandbox.ErrUnavailable, err)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	p, err := openPins(cfg.StateDir)
	if err != nil {
		devnull.Close()
		return nil, fmt.Errorf("%w: linux runtime: %v", sandbox.ErrUnavailable, err)
	}
	w, err := newWatcher()
	if err != nil {
		devnull.Close()
		p.close(false)
		return nil, fmt.Errorf("linux runtime: %w", err)
	}
	r := &Runtime{
		cfg:       cfg,
		cg:        cg,
		ids:       newIDPool(cfg.IDMapBase, cfg.IDMapSlots),
		w:         w,
		exits:     newExitQueue(),
		devnull:   devnull,
		log:       cfg.Logger,
		pins:      p,
		sandboxes: map[string]*sbox{},
		pool:      map[string][]*sbox{},
		tickStop:  make(chan struct{}),
		tickDone:  make(chan struct{}),
	}
	if err := r.load(); err != nil {
		r.Close()
		return nil, err
	}
	go r.logTicker()
	return r, nil
}

// Name implements sandbox.Runtime.
func (r *Runtime) Name() string { return "linux" }

// Exits implements sandbox.Runtime. The channel is closed by Close.
func (r *Runtime) Exits() <-chan sandbox.ExitEvent { return r.exits.out }

// Close stops watching; sandboxes keep running, and a new Runtime over the
// same StateDir adopts them (prepared ones too). With no sandbox left, the
// pin namespace goes too.
func (r *Runtime) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	close(r.tickStop)
	if r.tickDone != nil {
		select {
		case <-r.tickDone:
		case <-time.After(5 * time.Second):
		}
	}
	r.w.close()
	r.mu.Lock()
	for _, sb := range r.sandboxes {
		for _, c := range sb.containers {
			c.mu.Lock()
			if c.pidfd >= 0 {
				unix.Close(c.pidfd)
				c.pidfd = -1
			}
			c.mu.Unlock()
		}
	}
	empty := len(r.sandboxes) == 0 && len(r.doomed) == 0
	for _, l := range r.pool {
		empty = empty && len(l) == 0
	}
	r.mu.Unlock()
	if empty {
		// What is on disk decides: a sandbox unknown to us (a failed
		// removal of an unknown ID) may still have pins.
		ents, _ := os.ReadDir(filepath.Join(r.cfg.StateDir, "sandboxes"))
		empty = len(ents) == 0
	}
	r.exits.close()
	perr := r.pins.close(empty)
	return errors.Join(perr, r.devnull.Close())
}

func (r *Runtime) sandbox(id string) (*sbox, error) {
	if r.closed.Load() {
		return nil, errClosed
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	sb := r.sandboxes[id]
	if sb == nil {
		return nil, fmt.Errorf("%w: sandbox %q", sandbox.ErrNotFound, id)
	}
	return sb, nil
}

// container returns the current instance of a container.
func (r *Runtime) container(sandboxID, name string) (*ctr, error) {
	sb, err := r.sandbox(sandboxID)
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	c := sb.containers[name]
	if c == nil || sb.removed {
		return nil, fmt.Errorf("%w: container %q in sandbox %q", sandbox.ErrNotFound, name, sandboxID)
	}
	return c, nil
}

func (c *ctr) running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st.Running
}

func (c *ctr) signal(sig unix.Signal) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pidfd < 0 {
		return nil
	}
	err := unix.PidfdSendSignal(c.pidfd, sig, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// watch arranges for onExit once the instance's process ends.
func (r *Runtime) watch(c *ctr) error {
	return r.w.add(c.pidfd, func() { r.onExit(c) })
}

// onExit records the end of an instance and reports it.
func (r *Runtime) onExit(c *ctr) {
	ev := sandbox.ExitEvent{SandboxID: c.sb.id, Name: c.st.Name, PID: c.st.PID, FinishedAt: time.Now()}
	// Last index entry: the final output is dated no later than the exit.
	r.indexLog(c, ev.FinishedAt)
	c.mu.Lock()
	if c.pidfd < 0 { // the runtime closed meanwhile; the next one adopts
		c.mu.Unlock()
		return
	}
	code, sig, err := waitPidfd(c.pidfd)
	switch {
	case err == nil:
		ev.ExitCode, ev.Signal = code, sig
	case errors.Is(err, unix.ECHILD):
		// Adopted after a restart: not our child, status not observable.
		ev.ExitCode = -1
		ev.Message = "exit status unknown: the container was adopted after a runtime restart"
	default:
		ev.ExitCode = -1
		ev.Message = "exit status unknown: " + err.Error()
	}
	ev.OOMKilled = r.cg.oomKills(cgroupRel(c.sb.key, c.st.Name)) > 0
	if c.sb.st.PausePID != 0 {
		// In a shared pid namespace the container's other processes
		// outlive its pid 1; they end with it, as in their own.
		r.cg.kill(cgroupRel(c.sb.key, c.st.Name))
	}
	if ev.OOMKilled && ev.Message == "" {
		ev.Message = "OOMKilled"
	}
	unix.Close(c.pidfd)
	c.pidfd = -1
	c.st.Running = false
	c.st.Exit = &ev
	st := c.st
	c.mu.Unlock()
	// The sandbox may be going away: RemoveSandbox waits for done before
	// deleting the directory, so this write never races the removal.
	if err := writeJSON(filepath.Join(c.dir, "state.json"), st); err != nil && !errors.Is(err, fs.ErrNotExist) {
		r.log.Warn("sandbox: save container state", "sandbox", c.sb.id, "container", st.Name, "err", err)
	}
	close(c.done)
	r.exits.push(ev)
}

// waitPidfd reaps the process of pidfd if it is our child, returning its
// exit code (128+signal when killed) and signal.
func waitPidfd(pidfd int) (code, sig int, err error) {
	var si unix.Siginfo
	if err := unix.Waitid(unix.P_PIDFD, pidfd, &si, unix.WEXITED|unix.WNOHANG, nil); err != nil {
		return -1, 0, err
	}
	// si_status follows si_pid and si_uid in the union, which starts
	// after three int32s and the padding that aligns it to a pointer.
	off := 3*4 + unsafe.Sizeof(uintptr(0)) - 4 + 8
	status := int(*(*int32)(unsafe.Add(unsafe.Pointer(&si), off)))
	switch si.Code {
	case 1: // CLD_EXITED
		return status, 0, nil
	case 2, 3: // CLD_KILLED, CLD_DUMPED
		return 128 + status, status, nil
	}
	if si.Signo == 0 {
		// WNOHANG and nothing to reap yet; epoll said it exited, so this
		// is a process we cannot see the status of.
		return -1, 0, unix.ECHILD
	}
	return -1, 0, fmt.Errorf("unexpected wait code %d", si.Code)
}

// cgroupRel is the cgroup of a sandbox's container, relative to the parent.
func cgroupRel(key, name string) string { return key + "/" + name }

// load rebuilds the runtime's view from StateDir and adopts running
// containers. Sandboxes cut off half-way (created, prepared or claimed)
// are removed; prepared ones go back to the pool.
func (r *Runtime) load() error {
	base := filepath.Join(r.cfg.StateDir, "sandboxes")
	ents, err := os.ReadDir(base)
	if err != nil {
		return fmt.Errorf("linux runtime: %w", err)
	}
	pinned, err := r.pins.keys()
	if err != nil {
		return fmt.Errorf("linux runtime: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		key := e.Name()
		sb := &sbox{key: key, dir: filepath.Join(base, key), containers: map[string]*ctr{}}
		err := readJSON(filepath.Join(sb.dir, "sandbox.json"), &sb.st)
		if sb.st.HostID != 0 {
			r.ids.claim(sb.st.HostID)
		}
		if _, serr := os.Stat(filepath.Join(sb.dir, "ns")); serr == nil {
			sb.legacyPins = true
		}
		switch {
		case err == nil && sb.st.Complete:
			sb.id = sb.st.Config.ID
			if sb.id == "" {
				sb.id = key
			}
		case err == nil && sb.st.Prepared && sb.st.Config.ID == "" && pinned[key]:
			r.pool[sb.st.Pool] = append(r.pool[sb.st.Pool], sb)
			continue
		default:
			// Cut off while being created, prepared or claimed: nothing
			// ran in it yet. (A prepared one without pins lost its
			// namespaces with the pin namespace: a host reboot.)
			r.log.Info("sandbox: removing half-created sandbox", "sandbox", key)
			if err := r.destroy(context.Background(), sb); err != nil {
				r.log.Warn("sandbox: remove half-created sandbox", "sandbox", key, "err", err)
			}
			continue
		}
		cents, _ := os.ReadDir(filepath.Join(sb.dir, "containers"))
		for _, ce := range cents {
			c := &ctr{sb: sb, dir: filepath.Join(sb.dir, "containers", ce.Name()), pidfd: -1, done: make(chan struct{})}
			if err := readJSON(filepath.Join(c.dir, "state.json"), &c.st); err != nil {
				continue // never started
			}
			r.adopt(c)
			sb.containers[c.st.Name] = c
		}
		r.sandboxes[sb.id] = sb
	}
	return nil
}

// adopt takes over a container a previous runtime started: a watch if its
// process still runs (the same process: pid and start time match), else
// an exit record.
func (r *Runtime) adopt(c *ctr) {
	if !c.st.Running {
		close(c.done)
		return
	}
	ev := &sandbox.ExitEvent{
		SandboxID: c.sb.id, Name: c.st.Name, PID: c.st.PID, ExitCode: -1,
		FinishedAt: time.Now(),
		Message:    "exited while the runtime was not running; exit status unknown",
	}
	pidfd, err := unix.PidfdOpen(c.st.PID, 0)
	if err == nil {
		// Checked after opening: the pidfd then names the process we
		// verified, whatever happens to the pid number later.
		ticks, exited, terr := procStartTicks(c.st.PID)
		switch {
		case terr != nil || ticks != c.st.StartTicks:
			err = fmt.Errorf("pid %d is not the container any more", c.st.PID)
		case exited:
			// Dead but not reaped: if it is our child (same process,
			// new Runtime), its status is still there.
			if code, sig, werr := waitPidfd(pidfd); werr == nil {
				ev.ExitCode, ev.Signal, ev.Message = code, sig, ""
			}
			err = errors.New("exited")
		}
		if err != nil {
			unix.Close(pidfd)
		}
	}
	if err == nil {
		c.pidfd = pidfd
		initLogState(c)
		if err = r.watch(c); err == nil {
			return
		}
		unix.Close(pidfd)
		c.pidfd = -1
	}
	ev.OOMKilled = r.cg.oomKills(cgroupRel(c.sb.key, c.st.Name)) > 0
	c.st.Running = false
	c.st.Exit = ev
	if err := writeJSON(filepath.Join(c.dir, "state.json"), c.st); err != nil {
		r.log.Warn("sandbox: save container state", "sandbox", c.sb.id, "container", c.st.Name, "err", err)
	}
	close(c.done)
}

// Recover implements sandbox.Runtime. The work is done by New; Recover
// reports the result, and the state as it is now.
func (r *Runtime) Recover(ctx context.Context) ([]sandbox.SandboxState, error) {
	r.mu.Lock()
	sbs := make([]*sbox, 0, len(r.sandboxes))
	for _, sb := range r.sandboxes {
		sbs = append(sbs, sb)
	}
	r.mu.Unlock()
	sort.Slice(sbs, func(i, j int) bool { return sbs[i].id < sbs[j].id })
	out := make([]sandbox.SandboxState, 0, len(sbs))
	for _, sb := range sbs {
		sb.mu.Lock()
		if sb.removed || !sb.st.Complete {
			sb.mu.Unlock()
			continue
		}
		s := sandbox.SandboxState{ID: sb.id, IP: sb.st.IP}
		for _, c := range sb.containers {
			c.mu.Lock()
			cs := sandbox.ContainerState{Name: c.st.Name, PID: c.st.PID, Running: c.st.Running, StartedAt: c.st.StartedAt}
			if c.st.Exit != nil {
				ev := *c.st.Exit
				cs.Exit = &ev
			}
			c.mu.Unlock()
			s.Containers = append(s.Containers, cs)
		}
		sb.mu.Unlock()
		sort.Slice(s.Containers, func(i, j int) bool { return s.Containers[i].Name < s.Containers[j].Name })
		out = append(out, s)
	}
	return out, nil
}

// StopContainer implements sandbox.Runtime.
func (r *Runtime) StopContainer(ctx context.Context, sandboxID, name string, grace time.Duration) error {
	c, err := r.container(sandboxID, name)
	if err != nil {
		return err
	}
	return r.stop(ctx, c, grace)
}

func (r *Runtime) stop(ctx context.Context, c *ctr, grace time.Duration) error {
	err := r.stopWorkload(ctx, c, grace)
	if err == nil {
		endRelay(c, time.Second)
	}
	return err
}

func (r *Runtime) stopWorkload(ctx context.Context, c *ctr, grace time.Duration) error {
	if grace > 0 {
		if err := c.signal(unix.SIGTERM); err != nil {
			return fmt.Errorf("stop %s: %w", c.st.Name, err)
		}
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-c.done:
			return nil
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := c.signal(unix.SIGKILL); err != nil {
		return fmt.Errorf("stop %s: %w", c.st.Name, err)
	}
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
