package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/hostapi"
	"github.com/skiffhq/skiff/internal/image"
	"github.com/skiffhq/skiff/internal/sandbox"
)

// runner drives one container group on this host, from sandbox creation to
// teardown. One goroutine owns all of its state; the agent talks to it
// through channels only.
type runner struct {
	a   *Agent
	log *slog.Logger
	id  string

	updates  chan *api.Group
	exits    chan sandbox.ExitEvent
	removed  chan struct{}
	detached chan struct{}
	// calls carries work back from the runner's helper goroutines (probe
	// and hook outcomes); done is closed when the runner ends, and ctx is
	// cancelled then.
	calls  chan func()
	done   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc

	// Owned by the run goroutine.
	g          *api.Group
	prev       *sandbox.SandboxState
	ip         string
	created    bool
	initDone   bool
	inits      []*ctr
	ctrs       []*ctr
	restartGen int64
	// specGen is the spec generation the runner runs; oldSpec the spec
	// an unapplied update replaces, updating is set until the updated
	// group runs (respec.go).
	specGen    int64
	oldSpec    *api.GroupSpec
	updating   bool
	startedAt  *time.Time
	finishedAt *time.Time
	failReason string
	failMsg    string
	last       *hostapi.GroupUpdate
	events     []api.Event
	resolved   map[string]*image.Resolved
}

// ctr is one container's state on the host.
type ctr struct {
	spec      api.Container
	init      bool
	st        api.ContainerStatus
	pid       int
	running   bool
	done      bool // ended and will not run again
	restartAt time.Time
	backoff   time.Duration
	everRan   bool
	life      lifecycle // probes and hooks of the current instance (probe.go)
}

func newRunner(a *Agent, g *api.Group, prev *sandbox.SandboxState) *runner {
	ctx, cancel := context.WithCancel(context.Background())
	return &runner{
		a: a, log: a.log.With("group", g.ID), id: g.ID, g: g, prev: prev,
		updates: make(chan *api.Group, 1), exits: make(chan sandbox.ExitEvent, 64),
		removed: make(chan struct{}), detached: make(chan struct{}),
		calls: make(chan func(), 16), done: make(chan struct{}), ctx: ctx, cancel: cancel,
		restartGen: g.RestartGeneration,
		specGen:    initialSpecGen(g, prev != nil),
	}
}

// update hands the runner the newest record, replacing one not yet seen.
func (r *runner) update(g *api.Group) {
	for {
		select {
		case r.updates <- g:
			return
		default:
		}
		select {
		case <-r.updates:
		default:
		}
	}
}

func (r *runner) exited(ev sandbox.ExitEvent) {
	select {
	case r.exits <- ev:
	case <-r.removed:
	case <-r.detached:
	case <-r.done:
	}
}

func (r *runner) remove() {
	select {
	case <-r.removed:
	default:
		close(r.removed)
	}
}

func (r *runner) detach() {
	select {
	case <-r.detached:
	default:
		close(r.detached)
	}
}

func (r *runner) event(typ, reason, container, format string, args ...any) {
	r.events = append(r.events, api.Event{GroupID: r.id, Type: typ, Reason: reason, Container: container, Message: fmt.Sprintf(format, args...), Time: time.Now().UTC()})
}

func (r *runner) run() {
	defer r.a.forget(r.id, r)
	defer close(r.done)
	defer r.cancel()
	ctx := context.Background() // workloads outlive the agent's context
	r.setup()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if r.g.Deleting {
			r.teardown(ctx, true)
			return
		}
		next := r.step(ctx)
		r.publish()
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case g := <-r.updates:
			r.setRecord(g)
		case ev := <-r.exits:
			r.handleExit(ev)
		case f := <-r.calls:
			f()
		case <-timer.C:
		case <-r.removed:
			r.teardown(ctx, false)
			return
		case <-r.detached:
			return
		}
	}
}

// setup builds container state from the spec, the server's record (restart
// counts survive agent restarts there) and what the runtime recovered.
func (r *runner) setup() {
	known := map[string]api.ContainerStatus{}
	for _, cs := range append(append([]api.ContainerStatus{}, r.g.InitContainers...), r.g.Containers...) {
		known[cs.Name] = cs
	}
	mk := func(spec api.Container, init bool) *ctr {
		c := &ctr{spec: spec, init: init, st: api.ContainerStatus{Name: spec.Name, Image: spec.Image, State: api.ContainerWaiting, Reason: "ContainerCreating"}}
		if prev, ok := known[spec.Name]; ok {
			c.st.RestartCount = prev.RestartCount
			c.st.LastState = prev.LastState
			if init && prev.State == api.ContainerTerminated && prev.ExitCode != nil && *prev.ExitCode == 0 {
				c.st = prev
				c.done = true
			}
		}
		return c
	}
	for _, s := range r.g.Spec.InitContainers {
		r.inits = append(r.inits, mk(s, true))
	}
	for _, s := range r.g.Spec.Containers {
		r.ctrs = append(r.ctrs, mk(s, false))
	}
	r.startedAt = r.g.StartedAt
	if r.prev == nil {
		return
	}
	// Re-adopt: the sandbox exists; containers that still run are ours again.
	r.created = true
	r.ip = r.prev.IP
	byName := map[string]*ctr{}
	for _, c := range append(append([]*ctr{}, r.inits...), r.ctrs...) {
		byName[c.spec.Name] = c
	}
	regularSeen := false
	for _, cs := range r.prev.Containers {
		c := byName[cs.Name]
		if c == nil {
			continue
		}
		if !c.init {
			regularSeen = true
		}
		c.everRan = true
		started := cs.StartedAt.UTC()
		if cs.Running {
			c.running = true
			c.pid = cs.PID
			c.st.State = api.ContainerRunning
			c.st.Reason = ""
			c.st.PID = cs.PID
			c.st.StartedAt = &started
			// Hooks ran before the agent restarted; readiness carries over
			// from the last report until the probes say otherwise.
			newInstance(c, started)
			c.life.started = true
			c.life.ready = known[cs.Name].Ready
		} else if cs.Exit != nil {
			c.pid = cs.PID
			c.running = true // let handleExit account the exit
			c.st.StartedAt = &started
			ev := *cs.Exit
			ev.PID = cs.PID
			r.exits <- ev
		}
	}
	if regularSeen {
		r.initDone = true
		for _, c := range r.inits {
			c.done = true
		}
	}
	r.log.Info("re-adopted sandbox", "ip", r.ip, "containers", len(r.prev.Containers))
	r.event("Normal", "Adopted", "", "agent restarted; re-adopted the running sandbox")
}

// step starts what should run now and returns when it next needs to act.
func (r *runner) step(ctx context.Context) time.Time {
	if r.g.RestartGeneration > r.restartGen {
		r.restartAll(ctx)
	}
	if r.g.SpecGeneration > r.specGen {
		r.applySpec(ctx)
	}
	if r.failReason != "" || r.terminal() {
		return time.Time{}
	}
	if !r.created {
		if err := r.create(ctx); err != nil {
			return time.Now().Add(5 * time.Second)
		}
		if r.failReason != "" {
			return time.Time{}
		}
	}
	var next time.Time
	soonest := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if d := r.g.Spec.ActiveDeadlineSeconds; d != nil && r.startedAt != nil {
		deadline := r.startedAt.Add(time.Duration(*d) * time.Second)
		if time.Now().After(deadline) {
			r.stopAll(ctx, r.grace())
			r.failReason, r.failMsg = "DeadlineExceeded", fmt.Sprintf("the group ran longer than activeDeadlineSeconds (%d)", *d)
			r.event("Warning", "DeadlineExceeded", "", "%s", r.failMsg)
			return time.Time{}
		}
		soonest(deadline)
	}
	if !r.initDone {
		for _, c := range r.inits {
			if c.done {
				continue
			}
			if c.running {
				return next
			}
			if time.Now().Before(c.restartAt) {
				soonest(c.restartAt)
				return next
			}
			r.start(ctx, c)
			return next
		}
		r.initDone = true
	}
	for _, c := range r.ctrs {
		if c.done || c.running {
			continue
		}
		if time.Now().Before(c.restartAt) {
			soonest(c.restartAt)
			continue
		}
		r.start(ctx, c)
		if !c.running && !c.done {
			soonest(c.restartAt)
		}
	}
	r.probeStep(soonest)
	return next
}

func (r *runner) grace() time.Duration {
	if g := r.g.Spec.TerminationGracePeriodSeconds; g != nil {
		return time.Duration(*g) * secondUnit
	}
	return 30 * secondUnit
}

// create resolves images and builds the sandbox.
func (r *runner) create(ctx context.Context) error {
	r.resolved = map[string]*image.Resolved{}
	for _, c := range append(append([]*ctr{}, r.inits...), r.ctrs...) {
		if _, ok := r.resolved[c.spec.Image]; ok {
			continue
		}
		res, err := r.ensureImage(ctx, c) // pull.go: pull policy, pulls, back-off, events
		if errors.Is(err, errPullBackOff) {
			return err // step comes back later
		}
		if err != nil {
			r.failReason = "ErrImageNeverPull"
			r.failMsg = fmt.Sprintf("image %q is not on host %s and imagePullPolicy is Never: %v", c.spec.Image, r.a.cfg.Name, err)
			if !errors.Is(err, image.ErrNotFound) {
				r.failReason = "InvalidImage"
				r.failMsg = fmt.Sprintf("image %q cannot be used: %v", c.spec.Image, err)
			}
			for _, cc := range append(append([]*ctr{}, r.inits...), r.ctrs...) {
				cc.st.State = api.ContainerWaiting
				cc.st.Reason, cc.st.Message = r.failReason, r.failMsg
				cc.done = true
			}
			r.event("Warning", "Failed", c.spec.Name, "%s", r.failMsg)
			return nil
		}
		r.resolved[c.spec.Image] = res
	}
	cfg := r.sandboxConfig()
	var poolDone func(fromPool bool)
	if r.a.pool != nil { // take a prepared sandbox of the group's shape class
		cfg.PoolClass, poolDone = r.a.pool.beginCreate(r.g.Spec.Requests())
	}
	began := time.Now()
	release := r.a.startSlot(ctx)
	info, err := r.a.rt.CreateSandbox(ctx, cfg)
	release()
	if poolDone != nil {
		poolDone(err == nil && info.FromPool)
	}
	if err == nil {
		// Says per group whether the warm pool served it (benchmarks and
		// users tell hits from misses by this event).
		how := "built"
		switch {
		case info.FromPool:
			how = "taken from the warm pool (class " + cfg.PoolClass + ")"
		case cfg.PoolClass != "":
			how = "built: no prepared sandbox was left (pool miss)"
		}
		r.event("Normal", "SandboxReady", "", "sandbox %s in %s", how, time.Since(began).Round(time.Microsecond))
	}
	if err != nil {
		r.log.Error("create sandbox", "err", err)
		r.event("Warning", "FailedCreateSandbox", "", "cannot create the sandbox: %v", err)
		if errors.Is(err, sandbox.ErrInvalid) {
			r.failReason, r.failMsg = "FailedCreateSandbox", err.Error()
			for _, cc := range append(append([]*ctr{}, r.inits...), r.ctrs...) {
				cc.done = true
			}
			return nil
		}
		return err
	}
	r.created = true
	r.ip = info.IP
	now := time.Now().UTC()
	if r.startedAt == nil {
		r.startedAt = &now
	}
	return nil
}

func shortDigest(d string) string {
	if i := strings.Index(d, ":"); i >= 0 && len(d) > i+13 {
		return d[:i+13]
	}
	return d
}

func (r *runner) sandboxConfig() sandbox.SandboxConfig {
	s := &r.g.Spec
	req := s.Requests()
	cfg := sandbox.SandboxConfig{ID: r.id, Hostname: s.Hostname, Labels: r.g.Labels, SharePID: s.ShareProcessNamespace}
	if cfg.Hostname == "" {
		cfg.Hostname = r.g.Name
	}
	if s.CPU > 0 || hasLimits(s) {
		cfg.MilliCPU = req.MilliCPU
	}
	if s.Memory > 0 || hasLimits(s) {
		cfg.Memory = req.Memory
	}
	if dc := s.DNSConfig; dc != nil {
		cfg.Nameservers, cfg.Searches = dc.Nameservers, dc.Searches
		for _, o := range dc.Options {
			if o.Value != nil {
				cfg.Options = append(cfg.Options, o.Name+":"+*o.Value)
			} else {
				cfg.Options = append(cfg.Options, o.Name)
			}
		}
	}
	if len(s.HostAliases) > 0 {
		cfg.HostAliases = map[string][]string{}
		for _, h := range s.HostAliases {
			cfg.HostAliases[h.IP] = append(cfg.HostAliases[h.IP], h.Hostnames...)
		}
	}
	for _, c := range s.Containers {
		for _, p := range c.Ports {
			if p.HostPort > 0 {
				cfg.Ports = append(cfg.Ports, sandbox.Port{HostPort: p.HostPort, ContainerPort: p.ContainerPort, Protocol: strings.ToLower(p.Protocol)})
			}
		}
	}
	for _, v := range s.Volumes {
		vc := sandbox.VolumeConfig{Name: v.Name}
		switch {
		case v.EmptyDir != nil:
			vc.Kind = "emptyDir"
			if v.EmptyDir.Medium == "Memory" {
				vc.Kind = "memory"
			}
			vc.SizeLimit = int64(v.EmptyDir.SizeLimit)
		case v.ConfigFile != nil:
			vc.Kind = "files"
			for _, it := range v.ConfigFile.Items {
				mode := uint32(0o644)
				if v.ConfigFile.DefaultMode != nil {
					mode = uint32(*v.ConfigFile.DefaultMode)
				}
				if it.Mode != nil {
					mode = uint32(*it.Mode)
				}
				vc.Files = append(vc.Files, sandbox.File{Path: it.Path, Content: []byte(it.Content), Mode: mode})
			}
		case v.HostPath != nil:
			vc.Kind = "hostPath"
			vc.HostPath = v.HostPath.Path
		case v.NFS != nil:
			vc.Kind = "nfs"
			vc.NFS = &sandbox.NFSVolume{Server: v.NFS.Server, Path: v.NFS.Path, ReadOnly: v.NFS.ReadOnly}
		}
		cfg.Volumes = append(cfg.Volumes, vc)
	}
	return cfg
}

func hasLimits(s *api.GroupSpec) bool {
	for _, c := range s.Containers {
		if c.Resources.Limits.CPU > 0 || c.Resources.Limits.Memory > 0 {
			return true
		}
	}
	return false
}

// containerConfig resolves argv, env, user and working dir the way
// Kubernetes combines a container spec with its image's config.
func (r *runner) containerConfig(c *ctr) (sandbox.ContainerConfig, error) {
	res := r.resolved[c.spec.Image]
	if res == nil {
		var err error
		if res, err = r.a.images.Resolve(context.Background(), c.spec.Image); err != nil {
			return sandbox.ContainerConfig{}, err
		}
		r.resolved[c.spec.Image] = res
	}
	ic := res.Config
	var argv []string
	switch {
	case len(c.spec.Command) > 0:
		argv = append(append(argv, c.spec.Command...), c.spec.Args...)
	case len(c.spec.Args) > 0:
		argv = append(append(argv, ic.Entrypoint...), c.spec.Args...)
	default:
		argv = append(append(argv, ic.Entrypoint...), ic.Cmd...)
	}
	if len(argv) == 0 {
		return sandbox.ContainerConfig{}, fmt.Errorf("%w: no command: the image has no entrypoint or cmd and the container sets none", sandbox.ErrCannotRun)
	}
	env := append([]string{}, ic.Env...)
	hasPath := false
	for _, e := range env {
		if strings.HasPrefix(e, "PATH=") {
			hasPath = true
		}
	}
	if !hasPath {
		env = append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	for _, e := range c.spec.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			v = r.fieldRef(e.ValueFrom.FieldRef.FieldPath)
		}
		env = append(env, e.Name+"="+v)
	}
	env = append(env, "HOSTNAME="+r.g.Name)
	if c.spec.TTY {
		env = append(env, "TERM=xterm")
	}
	wd := c.spec.WorkingDir
	if wd == "" {
		wd = ic.WorkingDir
	}
	if wd == "" {
		wd = "/"
	}
	uid, gid, err := parseUser(ic.User)
	if err != nil {
		return sandbox.ContainerConfig{}, err
	}
	for _, sc := range []*api.SecurityContext{r.g.Spec.SecurityContext, c.spec.SecurityContext} {
		if sc == nil {
			continue
		}
		if sc.RunAsUser != nil {
			uid = uint32(*sc.RunAsUser)
		}
		if sc.RunAsGroup != nil {
			gid = uint32(*sc.RunAsGroup)
		}
	}
	cc := sandbox.ContainerConfig{
		Name: c.spec.Name, RootfsLayers: res.LayerDirs, Args: argv, Env: env, WorkingDir: wd,
		UID: uid, GID: gid, TTY: c.spec.TTY, Stdin: c.spec.Stdin,
		MilliCPU: int64(c.spec.Resources.Limits.CPU), Memory: int64(c.spec.Resources.Limits.Memory), Pids: c.spec.Resources.Limits.Pids,
	}
	if sc := c.spec.SecurityContext; sc != nil {
		cc.ReadOnlyRoot = sc.ReadOnlyRootFilesystem
	}
	for _, m := range c.spec.VolumeMounts {
		cc.Mounts = append(cc.Mounts, sandbox.Mount{Volume: m.Name, Destination: m.MountPath, SubPath: m.SubPath, ReadOnly: m.ReadOnly})
	}
	return cc, nil
}

func (r *runner) fieldRef(p string) string {
	switch p {
	case "metadata.name":
		return r.g.Name
	case "metadata.uid":
		return r.g.ID
	case "metadata.namespace":
		return r.g.AccountID
	case "status.podIP":
		return r.ip
	case "status.hostIP":
		return r.g.HostIP
	case "spec.nodeName":
		return r.a.cfg.Name
	}
	if k, ok := strings.CutPrefix(p, "metadata.labels['"); ok {
		return r.g.Labels[strings.TrimSuffix(k, "']")]
	}
	return ""
}

// parseUser reads an image's numeric "uid[:gid]"; names need the image's
// /etc/passwd, which the runtime does not look into yet.
func parseUser(u string) (uint32, uint32, error) {
	if u == "" || u == "root" || u == "0" {
		return 0, 0, nil
	}
	us, gs, _ := strings.Cut(u, ":")
	uid, err := strconv.ParseUint(us, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: image user %q is not numeric; set securityContext.runAsUser", sandbox.ErrCannotRun, u)
	}
	gid := uint64(0)
	if gs != "" {
		if gid, err = strconv.ParseUint(gs, 10, 32); err != nil {
			return 0, 0, fmt.Errorf("%w: image group %q is not numeric", sandbox.ErrCannotRun, gs)
		}
	}
	return uint32(uid), uint32(gid), nil
}

func (r *runner) start(ctx context.Context, c *ctr) {
	cc, err := r.containerConfig(c)
	var info *sandbox.ContainerInfo
	if err == nil {
		release := r.a.startSlot(ctx)
		info, err = r.a.rt.StartContainer(ctx, r.id, cc)
		release()
	}
	now := time.Now().UTC()
	if err != nil {
		code := 128
		c.st.LastState = nil
		c.st.State = api.ContainerTerminated
		c.st.ExitCode = &code
		c.st.Reason = "ContainerCannotRun"
		c.st.Message = err.Error()
		c.st.FinishedAt = &now
		c.st.PID = 0
		r.event("Warning", "Failed", c.spec.Name, "Error: %v", err)
		r.afterExit(c, code, 0)
		return
	}
	c.running = true
	c.everRan = true
	c.pid = info.PID
	started := info.StartedAt.UTC()
	c.st.State = api.ContainerRunning
	c.st.Reason, c.st.Message = "", ""
	c.st.ExitCode = nil
	c.st.Signal = 0
	c.st.FinishedAt = nil
	c.st.PID = info.PID
	c.st.StartedAt = &started
	r.event("Normal", "Created", c.spec.Name, "Created container %s", c.spec.Name)
	r.event("Normal", "Started", c.spec.Name, "Started container %s", c.spec.Name)
	newInstance(c, started)
	r.runPostStart(c)
}

func (r *runner) find(name string) *ctr {
	for _, c := range append(append([]*ctr{}, r.inits...), r.ctrs...) {
		if c.spec.Name == name {
			return c
		}
	}
	return nil
}

func (r *runner) handleExit(ev sandbox.ExitEvent) {
	c := r.find(ev.Name)
	if c == nil || !c.running || (ev.PID != 0 && c.pid != 0 && ev.PID != c.pid) {
		return // an instance we already stopped or replaced
	}
	c.running = false
	fin := ev.FinishedAt.UTC()
	if ev.FinishedAt.IsZero() {
		fin = time.Now().UTC()
	}
	code := ev.ExitCode
	c.st.State = api.ContainerTerminated
	c.st.ExitCode = &code
	c.st.Signal = ev.Signal
	c.st.FinishedAt = &fin
	c.st.PID = 0
	c.st.Message = ev.Message
	if c.st.Message == "" {
		c.st.Message = c.life.killMsg // why we killed it, if we did
	}
	instanceEnded(c)
	switch {
	case ev.OOMKilled:
		c.st.Reason = "OOMKilled"
		r.event("Warning", "OOMKilling", c.spec.Name, "container %s was killed for running out of memory (limit reached)", c.spec.Name)
	case code == 0:
		c.st.Reason = "Completed"
	case code < 0:
		c.st.Reason = "Unknown"
	default:
		c.st.Reason = "Error"
	}
	if c.st.StartedAt != nil && fin.Sub(*c.st.StartedAt) > 2*r.a.cfg.BackoffMax {
		c.backoff = 0 // it ran well for a while: start back-off afresh
	}
	r.afterExit(c, code, ev.Signal)
}

// afterExit applies the restart policy to a container that just ended.
func (r *runner) afterExit(c *ctr, code, signal int) {
	policy := r.g.Spec.RestartPolicy
	if c.init && policy == api.RestartAlways {
		policy = api.RestartOnFailure // init containers rerun only on failure
	}
	restart := policy == api.RestartAlways || (policy == api.RestartOnFailure && code != 0)
	if c.init && code == 0 {
		c.done = true
		return
	}
	if !restart {
		c.done = true
		if c.init {
			r.failReason = "InitContainerFailed"
			r.failMsg = fmt.Sprintf("init container %s exited with code %d", c.spec.Name, code)
		}
		return
	}
	last := c.st
	last.LastState = nil
	c.st.LastState = &last
	c.st.RestartCount++
	if c.backoff == 0 {
		c.backoff = r.a.cfg.BackoffBase
	} else {
		c.backoff = min(c.backoff*2, r.a.cfg.BackoffMax)
	}
	c.restartAt = time.Now().Add(c.backoff)
	c.st.State = api.ContainerWaiting
	c.st.Reason = "CrashLoopBackOff"
	c.st.Message = fmt.Sprintf("back-off %s restarting failed container %s", c.backoff, c.spec.Name)
	if code == 0 {
		c.st.Reason = "Completed"
		c.st.Message = fmt.Sprintf("restarting in %s (restartPolicy Always)", c.backoff)
	}
	r.event("Warning", "BackOff", c.spec.Name, "%s", c.st.Message)
}

// stopAll stops every running container with the grace period, in
// parallel, and waits for them. Each container's preStop hook runs first,
// within the grace period (none with grace 0).
func (r *runner) stopAll(ctx context.Context, grace time.Duration) {
	type stopped struct {
		name        string
		preErr, err error
	}
	done := make(chan stopped)
	n := 0
	for _, c := range append(append([]*ctr{}, r.inits...), r.ctrs...) {
		if !c.running {
			continue
		}
		n++
		r.event("Normal", "Killing", c.spec.Name, "Stopping container %s (grace %s)", c.spec.Name, grace)
		pre := preStopOf(c)
		if c.life.stopping {
			pre = nil // a kill under way ran it already
		}
		go func(name string) {
			preErr, err := r.stopContainer(ctx, r.ip, name, pre, grace)
			done <- stopped{name, preErr, err}
		}(c.spec.Name)
	}
	for i := 0; i < n; i++ {
		s := <-done
		if s.preErr != nil {
			r.event("Warning", "FailedPreStopHook", s.name, "PreStopHook failed: %v", s.preErr)
		}
		if s.err != nil {
			r.log.Warn("stop container", "container", s.name, "err", s.err)
		}
	}
	// Account the exits the stops produced.
	for _, c := range append(append([]*ctr{}, r.inits...), r.ctrs...) {
		if !c.running {
			continue
		}
		c.running = false
		instanceEnded(c)
		now := time.Now().UTC()
		code := 137
		c.st.State = api.ContainerTerminated
		c.st.ExitCode = &code
		c.st.Reason = "Killed"
		c.st.FinishedAt = &now
		c.st.PID = 0
	}
	for {
		select {
		case ev := <-r.exits:
			if c := r.find(ev.Name); c != nil && c.pid == ev.PID && c.st.State == api.ContainerTerminated {
				code := ev.ExitCode
				c.st.ExitCode = &code
				c.st.Reason = "Completed"
				if code != 0 {
					c.st.Reason = "Error"
				}
			}
		default:
			return
		}
	}
}

// restartAll acts on a restart request: stop everything, then start over
// from the init containers.
func (r *runner) restartAll(ctx context.Context) {
	r.restartGen = r.g.RestartGeneration
	r.event("Normal", "Restarting", "", "restarting all containers on request")
	r.stopAll(ctx, r.grace())
	r.failReason, r.failMsg = "", ""
	r.initDone = len(r.inits) == 0
	for _, c := range append(append([]*ctr{}, r.inits...), r.ctrs...) {
		if c.everRan {
			last := c.st
			last.LastState = nil
			c.st.LastState = &last
			c.st.RestartCount++
		}
		c.done = false
		c.backoff = 0
		c.restartAt = time.Time{}
		c.st.State = api.ContainerWaiting
		c.st.Reason = "ContainerCreating"
		c.st.Message = ""
	}
	r.finishedAt = nil
	now := time.Now().UTC()
	r.startedAt = &now
}

// terminal says whether the group has ended for good.
func (r *runner) terminal() bool {
	if r.failReason != "" {
		return true
	}
	for _, c := range r.ctrs {
		if !c.done {
			return false
		}
	}
	return len(r.ctrs) > 0
}

// status derives the group status from its containers with Kubernetes'
// pod phase rules: Pending while init containers run or a container waits
// for its first start; Running while any container runs or will be
// restarted; once all have ended for good, Succeeded if all exited 0, else
// Failed. A container that has never run keeps the group Pending even
// when others run (as a pod with a container stuck in ContainerCreating).
func (r *runner) status() (api.Status, string, string) {
	if r.failReason != "" {
		return api.StatusFailed, r.failReason, r.failMsg
	}
	if r.g.RestartGeneration > r.restartGen {
		return api.StatusRestarting, "", ""
	}
	if reason, msg := r.pullStatus(); reason != "" {
		return api.StatusPending, reason, msg // ErrImagePull, ImagePullBackOff (pull.go)
	}
	if !r.initDone {
		for _, c := range r.inits {
			if !c.done && c.st.State == api.ContainerWaiting && c.st.RestartCount > 0 {
				return api.StatusPending, c.st.Reason, c.st.Message
			}
		}
		return api.StatusPending, "PodInitializing", ""
	}
	var running, stopped, succeeded int
	var waiting, failed *ctr
	for _, c := range r.ctrs {
		switch {
		case c.st.State == api.ContainerRunning:
			running++
		case c.st.State == api.ContainerTerminated:
			stopped++
			if c.st.ExitCode != nil && *c.st.ExitCode == 0 {
				succeeded++
			} else if failed == nil {
				failed = c
			}
		case c.everRan && c.st.LastState != nil:
			stopped++ // between two runs: restarting
		default:
			if waiting == nil {
				waiting = c
			}
		}
	}
	switch {
	case waiting != nil:
		if waiting.st.Reason == "CrashLoopBackOff" || waiting.st.Reason == "ContainerCannotRun" {
			return api.StatusPending, waiting.st.Reason, waiting.st.Message
		}
		return api.StatusPending, "ContainerCreating", ""
	case running > 0:
		return api.StatusRunning, "", ""
	case stopped == 0:
		return api.StatusPending, "ContainerCreating", ""
	case r.g.Spec.RestartPolicy == api.RestartAlways || !r.terminal():
		return api.StatusRunning, "", "" // restarting
	case succeeded == stopped || failed == nil:
		return api.StatusSucceeded, "", ""
	}
	return api.StatusFailed, failed.st.Reason, fmt.Sprintf("container %s: %s", failed.spec.Name, failed.st.Reason)
}

// publish reports the group's state if it changed.
func (r *runner) publish() {
	st, reason, msg := r.specStatus(r.status())
	if st.Terminal() && r.finishedAt == nil {
		now := time.Now().UTC()
		r.finishedAt = &now
	}
	u := hostapi.GroupUpdate{ID: r.id, Status: st, Reason: reason, Message: msg, IP: r.ip, StartedAt: r.startedAt, FinishedAt: r.finishedAt, RestartGeneration: r.restartGen, SpecGeneration: r.specGen}
	for _, c := range r.inits {
		u.InitContainers = append(u.InitContainers, c.st)
	}
	for _, c := range r.ctrs {
		cs := c.st
		cs.Ready = containerReady(c)
		u.Containers = append(u.Containers, cs)
	}
	if u.InitContainers == nil {
		u.InitContainers = []api.ContainerStatus{}
	}
	// Skip the report when nothing changed since the last one and the
	// server's record agrees (after a reconnect it may not: the leader marks
	// a silent host's groups HostNotReady, and the stream resends them).
	inSync := r.g.Status == st && r.g.Reason == reason && r.g.IP == r.ip
	if r.last != nil && len(r.events) == 0 && inSync && reflect.DeepEqual(*r.last, u) {
		return
	}
	snapshot := u
	r.last = &snapshot
	u.Events = r.events
	r.events = nil
	r.a.reporter.report(u)
}

// teardown stops the group and removes its sandbox; with report set it
// tells the server the group is gone from this host.
func (r *runner) teardown(ctx context.Context, report bool) {
	grace := r.grace()
	if !report {
		grace = 0
	}
	r.stopAll(ctx, grace)
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = r.a.rt.RemoveSandbox(ctx, r.id); err == nil {
			break
		}
		r.log.Warn("remove sandbox failed; retrying", "err", err)
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
	if err != nil {
		r.log.Error("remove sandbox", "err", err)
	}
	if report {
		r.a.reporter.report(hostapi.GroupUpdate{ID: r.id, Removed: true})
	}
	r.log.Info("group removed from host")
}
