package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/hostapi"
	"github.com/skiffhq/skiff/internal/image"
	"github.com/skiffhq/skiff/internal/image/imagetest"
	"github.com/skiffhq/skiff/internal/sandbox"
	"github.com/skiffhq/skiff/internal/sandbox/sim"
)

// The runner's lifecycle logic, driven against the simulated runtime. A
// container whose argv is ["exit", N, MS] ends with code N after MS ms.

func TestMain(m *testing.M) {
	// Probe periods, timeouts and grace periods in "seconds" of 20ms.
	secondUnit = 20 * time.Millisecond
	os.Exit(m.Run())
}

func testAgent(t *testing.T) *Agent {
	t.Helper()
	return newTestAgent(t, nil)
}

// newTestAgent makes an agent on the simulated runtime, wrapped by wrap
// when set.
func newTestAgent(t *testing.T, wrap func(*sim.Runtime) sandbox.Runtime) *Agent {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the image store unpacks layers with owners and device whiteouts: needs root")
	}
	rt, err := sim.New(sim.Config{Exit: func(_ string, cfg sandbox.ContainerConfig) (time.Duration, int, bool) {
		if len(cfg.Args) == 3 && cfg.Args[0] == "exit" {
			code, _ := strconv.Atoi(cfg.Args[1])
			ms, _ := strconv.Atoi(cfg.Args[2])
			return time.Duration(ms) * time.Millisecond, code, true
		}
		return 0, 0, false
	}})
	if err != nil {
		t.Fatal(err)
	}
	var srt sandbox.Runtime = rt
	if wrap != nil {
		srt = wrap(rt)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := New(Config{Server: "x:1", DataDir: t.TempDir(), Name: "test", BackoffBase: 20 * time.Millisecond, BackoffMax: 80 * time.Millisecond,
		NewRuntime: func(string) (sandbox.Runtime, error) { return srt, nil }, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	a.rt = srt
	a.reporter = newReporter(log)
	if a.images, err = image.Open(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.images.Close() })
	tar := imagetest.BuildBusybox(t, t.TempDir(), "busybox:latest")
	f, err := os.Open(tar)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := a.images.Import(context.Background(), f, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go a.dispatchExits(ctx)
	t.Cleanup(func() {
		a.mu.Lock()
		for _, r := range a.runners {
			r.remove()
		}
		a.mu.Unlock()
	})
	return a
}

func group(id string, policy api.RestartPolicy, containers ...api.Container) *api.Group {
	return &api.Group{ID: id, Name: id, Spec: api.GroupSpec{Containers: containers, RestartPolicy: policy}, Status: api.StatusScheduling}
}

func spec(name string, args ...string) api.Container {
	return api.Container{Name: name, Image: "busybox", Command: args}
}

// waitFor polls the reports until one satisfies ok.
func waitFor(t *testing.T, a *Agent, id string, what string, ok func(u *hostapi.GroupUpdate) bool) *hostapi.GroupUpdate {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last *hostapi.GroupUpdate
	for time.Now().Before(deadline) {
		for _, u := range a.reporter.take() {
			if u.ID != id {
				continue
			}
			u := u
			last = &u
			if ok(&u) {
				return &u
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("group %s never reached %s; last report %+v", id, what, last)
	return nil
}

func status(s api.Status) func(u *hostapi.GroupUpdate) bool {
	return func(u *hostapi.GroupUpdate) bool { return u.Status == s }
}

func TestRunnerRestartPolicies(t *testing.T) {
	a := testAgent(t)
	ctx := context.Background()
	tests := []struct {
		name     string
		policy   api.RestartPolicy
		args     []string
		want     api.Status
		exitCode int
		restarts func(n int) bool
	}{
		{"never-fails", api.RestartNever, []string{"exit", "3", "10"}, api.StatusFailed, 3, func(n int) bool { return n == 0 }},
		{"never-succeeds", api.RestartNever, []string{"exit", "0", "10"}, api.StatusSucceeded, 0, func(n int) bool { return n == 0 }},
		{"onfailure-success-ends", api.RestartOnFailure, []string{"exit", "0", "10"}, api.StatusSucceeded, 0, func(n int) bool { return n == 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a.assign(ctx, group(tt.name, tt.policy, spec("c", tt.args...)))
			u := waitFor(t, a, tt.name, string(tt.want), status(tt.want))
			c := u.Containers[0]
			if c.ExitCode == nil || *c.ExitCode != tt.exitCode || !tt.restarts(c.RestartCount) {
				t.Fatalf("container %+v", c)
			}
		})
	}
	t.Run("onfailure-restarts-with-backoff", func(t *testing.T) {
		a.assign(ctx, group("crash", api.RestartOnFailure, spec("c", "exit", "2", "5")))
		u := waitFor(t, a, "crash", "3 restarts", func(u *hostapi.GroupUpdate) bool { return u.Containers[0].RestartCount >= 3 })
		c := u.Containers[0]
		if c.LastState == nil || c.LastState.ExitCode == nil || *c.LastState.ExitCode != 2 {
			t.Fatalf("lastState not kept: %+v", c)
		}
		if u.Status.Terminal() {
			t.Fatalf("a restarting group is %s", u.Status)
		}
	})
}

func TestRunnerInitContainersRunInOrder(t *testing.T) {
	a := testAgent(t)
	g := group("init", api.RestartAlways, spec("main"))
	g.Spec.InitContainers = []api.Container{spec("first", "exit", "0", "10"), spec("second", "exit", "0", "10")}
	a.assign(context.Background(), g)
	u := waitFor(t, a, "init", "Running", status(api.StatusRunning))
	for _, ic := range u.InitContainers {
		if ic.State != api.ContainerTerminated || ic.Reason != "Completed" {
			t.Fatalf("init container %s: %+v", ic.Name, ic)
		}
	}
	if !u.InitContainers[0].FinishedAt.Before(*u.InitContainers[1].StartedAt) && !u.InitContainers[0].FinishedAt.Equal(*u.InitContainers[1].StartedAt) {
		t.Fatal("second init container started before the first finished")
	}
}

func TestRunnerFailingInitContainerFailsGroup(t *testing.T) {
	a := testAgent(t)
	g := group("badinit", api.RestartNever, spec("main"))
	g.Spec.InitContainers = []api.Container{spec("first", "exit", "1", "5")}
	a.assign(context.Background(), g)
	u := waitFor(t, a, "badinit", "Failed", status(api.StatusFailed))
	if u.Reason != "InitContainerFailed" || u.Containers[0].State == api.ContainerRunning {
		t.Fatalf("got %+v", u)
	}
}

func TestRunnerMissingImageFailsClearly(t *testing.T) {
	a := testAgent(t)
	g := group("noimg", api.RestartAlways, api.Container{Name: "c", Image: "nosuch:1", ImagePullPolicy: "Never"}) // pulls: see pull_test.go
	a.assign(context.Background(), g)
	u := waitFor(t, a, "noimg", "Failed", status(api.StatusFailed))
	if u.Reason != "ErrImageNeverPull" || u.Message == "" {
		t.Fatalf("got %+v", u)
	}
}

func TestRunnerDeadlineAndDelete(t *testing.T) {
	a := testAgent(t)
	g := group("deadline", api.RestartAlways, spec("c"))
	d := int64(1)
	g.Spec.ActiveDeadlineSeconds = &d
	a.assign(context.Background(), g)
	waitFor(t, a, "deadline", "Running", status(api.StatusRunning))
	u := waitFor(t, a, "deadline", "Failed", status(api.StatusFailed))
	if u.Reason != "DeadlineExceeded" {
		t.Fatalf("reason %q", u.Reason)
	}
	// Delete: the runner tears down and reports Removed.
	g2 := *g
	g2.Deleting = true
	a.assign(context.Background(), &g2)
	waitFor(t, a, "deadline", "Removed", func(u *hostapi.GroupUpdate) bool { return u.Removed })
	if states, _ := a.rt.Recover(context.Background()); len(states) != 0 {
		t.Fatalf("sandbox left after delete: %+v", states)
	}
}

func TestRunnerRestartRequest(t *testing.T) {
	a := testAgent(t)
	g := group("rs", api.RestartAlways, spec("c"))
	a.assign(context.Background(), g)
	waitFor(t, a, "rs", "Running", status(api.StatusRunning))
	g2 := *g
	g2.RestartGeneration = 1
	a.assign(context.Background(), &g2)
	u := waitFor(t, a, "rs", "restarted", func(u *hostapi.GroupUpdate) bool {
		return u.Status == api.StatusRunning && u.RestartGeneration == 1
	})
	if u.Containers[0].RestartCount != 1 {
		t.Fatalf("restart count %d, want 1", u.Containers[0].RestartCount)
	}
}

// fakeRuntime wraps the simulated runtime for probe and hook tests: every
// sandbox gets 127.0.0.1, so HTTP and TCP probes reach servers the test
// starts; Exec runs the small command language of run; and execs and stops
// are logged in order.
type fakeRuntime struct {
	*sim.Runtime
	mu    sync.Mutex
	flags map[string]bool
	log   []string
	stops []stopCall
}

type stopCall struct {
	name  string
	grace time.Duration
}

func fakeAgent(t *testing.T) (*Agent, *fakeRuntime) {
	f := &fakeRuntime{flags: map[string]bool{}}
	a := newTestAgent(t, func(rt *sim.Runtime) sandbox.Runtime { f.Runtime = rt; return f })
	return a, f
}

func (f *fakeRuntime) CreateSandbox(ctx context.Context, cfg sandbox.SandboxConfig) (*sandbox.SandboxInfo, error) {
	info, err := f.Runtime.CreateSandbox(ctx, cfg)
	if err != nil {
		return nil, err
	}
	info.IP = "127.0.0.1"
	return info, nil
}

func (f *fakeRuntime) set(flag string, v bool) {
	f.mu.Lock()
	f.flags[flag] = v
	f.mu.Unlock()
}

func (f *fakeRuntime) flag(flag string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.flags[flag]
}

func (f *fakeRuntime) record(s string) {
	f.mu.Lock()
	f.log = append(f.log, s)
	f.mu.Unlock()
}

// calls returns the log entries that start with prefix.
func (f *fakeRuntime) calls(prefix string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, s := range f.log {
		if strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	return out
}

func (f *fakeRuntime) stopsOf(name string) []stopCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []stopCall
	for _, s := range f.stops {
		if s.name == name {
			out = append(out, s)
		}
	}
	return out
}

// Exec runs: "ok" (exit 0), "fail" (prints boom, exit 1), "flag F" (exit 0
// while flag F is set, else 1), "block F" (waits for flag F, then exit 0),
// "sleep MS" (exit 0 after MS ms). A cancelled context ends any of them
// with the context's error.
func (f *fakeRuntime) Exec(ctx context.Context, sandboxID, name string, cfg sandbox.ExecConfig) (int, error) {
	if _, err := f.Runtime.Exec(ctx, sandboxID, name, sandbox.ExecConfig{Args: cfg.Args}); err != nil {
		return -1, err // sim checks that the container runs
	}
	f.record("exec " + name + ": " + strings.Join(cfg.Args, " "))
	code := 0
	switch cfg.Args[0] {
	case "fail":
		fmt.Fprintln(cfg.Stdout, "boom")
		code = 1
	case "flag":
		if !f.flag(cfg.Args[1]) {
			code = 1
		}
	case "block":
		for !f.flag(cfg.Args[1]) {
			select {
			case <-ctx.Done():
				return -1, ctx.Err()
			case <-time.After(2 * time.Millisecond):
			}
		}
	case "sleep":
		ms, _ := strconv.Atoi(cfg.Args[1])
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-time.After(time.Duration(ms) * time.Millisecond):
		}
	}
	return code, nil
}

func (f *fakeRuntime) StopContainer(ctx context.Context, sandboxID, name string, grace time.Duration) error {
	f.mu.Lock()
	f.stops = append(f.stops, stopCall{name, grace})
	f.log = append(f.log, "stop "+name)
	f.mu.Unlock()
	return f.Runtime.StopContainer(ctx, sandboxID, name, grace)
}

// watcher follows one group's reports and keeps every event they carry.
type watcher struct {
	t      *testing.T
	a      *Agent
	id     string
	last   *hostapi.GroupUpdate
	events []api.Event
}

func watch(t *testing.T, a *Agent, id string) *watcher { return &watcher{t: t, a: a, id: id} }

func (w *watcher) poll() {
	for _, u := range w.a.reporter.take() {
		if u.ID != w.id {
			continue
		}
		u := u
		w.events = append(w.events, u.Events...)
		w.last = &u
	}
}

func (w *watcher) until(what string, ok func(u *hostapi.GroupUpdate) bool) *hostapi.GroupUpdate {
	w.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, u := range w.a.reporter.take() {
			if u.ID != w.id {
				continue
			}
			u := u
			w.events = append(w.events, u.Events...)
			w.last = &u
			if ok(&u) {
				return &u
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	w.t.Fatalf("group %s never reached %s; last report %+v", w.id, what, w.last)
	return nil
}

// event returns the first event kept so far with this reason and
// container whose message contains substr.
func (w *watcher) event(reason, container, substr string) *api.Event {
	for i, e := range w.events {
		if e.Reason == reason && e.Container == container && strings.Contains(e.Message, substr) {
			return &w.events[i]
		}
	}
	return nil
}

func (w *watcher) untilEvent(reason, container, substr string) *api.Event {
	w.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		w.poll()
		if e := w.event(reason, container, substr); e != nil {
			return e
		}
		time.Sleep(2 * time.Millisecond)
	}
	w.t.Fatalf("group %s: no %s event for %q with %q; events %+v", w.id, reason, container, substr, w.events)
	return nil
}

func execProbe(period, failures int32, argv ...string) *api.Probe {
	return &api.Probe{Exec: &api.ExecAction{Command: argv}, PeriodSeconds: period, FailureThreshold: failures}
}

func runningReady(u *hostapi.GroupUpdate) bool {
	return u.Status == api.StatusRunning && u.Containers[0].State == api.ContainerRunning && u.Containers[0].Ready
}

func TestProbeLivenessExecRestarts(t *testing.T) {
	a, rt := fakeAgent(t)
	rt.set("healthy", true)
	c := spec("c")
	c.LivenessProbe = execProbe(1, 2, "flag", "healthy")
	g := group("live", api.RestartAlways, c)
	grace := int64(5)
	g.Spec.TerminationGracePeriodSeconds = &grace
	a.assign(context.Background(), g)
	w := watch(t, a, "live")
	w.until("Running and ready", runningReady)
	time.Sleep(10 * secondUnit)
	if n := len(rt.calls("exec c: flag healthy")); n < 3 {
		t.Fatalf("liveness probe ran %d times in 10 periods", n)
	}
	if w.poll(); w.last != nil && w.last.Containers[0].RestartCount != 0 {
		t.Fatalf("a healthy container restarted: %+v", w.last.Containers[0])
	}

	rt.set("healthy", false)
	u := w.until("restarted", func(u *hostapi.GroupUpdate) bool { return u.Containers[0].RestartCount >= 1 })
	rt.set("healthy", true)
	last := u.Containers[0].LastState
	if last == nil || last.ExitCode == nil || *last.ExitCode != 137 || !strings.Contains(last.Message, "Liveness probe failed") {
		t.Fatalf("last state %+v", last)
	}
	w.untilEvent("Unhealthy", "c", "Liveness probe failed: command \"flag healthy\" exited with 1")
	w.untilEvent("Killing", "c", "Container c failed liveness probe, will be restarted")
	if st := rt.stopsOf("c"); len(st) == 0 || st[0].grace != 5*secondUnit {
		t.Fatalf("stops %+v, want grace %s", st, 5*secondUnit)
	}
	if u.Status != api.StatusRunning {
		t.Fatalf("group %s while its container restarts", u.Status)
	}
	w.until("running again", runningReady)
}

func TestProbeLivenessFailureWithRestartNeverFailsGroup(t *testing.T) {
	a, _ := fakeAgent(t)
	c := spec("c")
	c.LivenessProbe = execProbe(1, 1, "fail")
	a.assign(context.Background(), group("never", api.RestartNever, c))
	w := watch(t, a, "never")
	u := w.until("Failed", status(api.StatusFailed))
	cs := u.Containers[0]
	if cs.State != api.ContainerTerminated || cs.RestartCount != 0 || !strings.Contains(cs.Message, "Liveness probe failed: command \"fail\" exited with 1: boom") {
		t.Fatalf("container %+v", cs)
	}
	w.untilEvent("Killing", "c", "failed liveness probe")
	if e := w.event("Killing", "c", "will be restarted"); e != nil {
		t.Fatalf("restartPolicy Never, yet: %s", e.Message)
	}
}

func TestProbeReadinessHTTPFlipsReady(t *testing.T) {
	a, _ := fakeAgent(t)
	var ok atomic.Bool
	var paths sync.Map
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths.Store(r.URL.Path, r.Header.Get("User-Agent"))
		if !ok.Load() {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	c := spec("web")
	c.ReadinessProbe = &api.Probe{HTTPGet: &api.HTTPGetAction{Path: "/healthz", Port: srv.Listener.Addr().(*net.TCPAddr).Port},
		PeriodSeconds: 1, TimeoutSeconds: 50, SuccessThreshold: 2, FailureThreshold: 2}
	a.assign(context.Background(), group("ready", api.RestartAlways, c))
	w := watch(t, a, "ready")
	w.untilEvent("Unhealthy", "web", "Readiness probe failed: HTTP probe failed with statuscode: 503: not yet")
	if u := w.last; u.Status != api.StatusRunning || u.Containers[0].Ready || u.Containers[0].State != api.ContainerRunning {
		t.Fatalf("before the probe passes: %+v", u)
	}
	ok.Store(true)
	w.until("ready", runningReady)
	ok.Store(false)
	u := w.until("not ready", func(u *hostapi.GroupUpdate) bool { return !u.Containers[0].Ready })
	if u.Status != api.StatusRunning || u.Containers[0].RestartCount != 0 || u.Containers[0].State != api.ContainerRunning {
		t.Fatalf("readiness failure did more than unready the container: %+v", u)
	}
	ok.Store(true)
	w.until("ready again", runningReady)
	if ua, _ := paths.Load("/healthz"); ua == nil || !strings.HasPrefix(ua.(string), "skiff-probe") {
		t.Fatalf("probe request: %v", ua)
	}
}

func TestProbeTCPReadiness(t *testing.T) {
	a, _ := fakeAgent(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	c := spec("db")
	c.ReadinessProbe = &api.Probe{TCPSocket: &api.TCPSocketAction{Port: port}, PeriodSeconds: 1, TimeoutSeconds: 50, FailureThreshold: 1}
	a.assign(context.Background(), group("tcp", api.RestartAlways, c))
	w := watch(t, a, "tcp")
	w.until("ready", runningReady)
	ln.Close()
	w.until("not ready", func(u *hostapi.GroupUpdate) bool { return !u.Containers[0].Ready })
	w.untilEvent("Unhealthy", "db", "Readiness probe failed: dial tcp")
}

func TestProbeStartupGatesLivenessAndReadiness(t *testing.T) {
	a, rt := fakeAgent(t)
	c := spec("app")
	c.StartupProbe = execProbe(1, 1000, "flag", "started")
	c.LivenessProbe = execProbe(1, 1, "ok", "live")
	c.ReadinessProbe = execProbe(1, 1, "ok", "ready")
	a.assign(context.Background(), group("startup", api.RestartAlways, c))
	w := watch(t, a, "startup")
	w.until("Running", status(api.StatusRunning))
	time.Sleep(10 * secondUnit)
	if n := len(rt.calls("exec app: flag started")); n < 3 {
		t.Fatalf("startup probe ran %d times in 10 periods", n)
	}
	if got := rt.calls("exec app: ok"); len(got) > 0 {
		t.Fatalf("liveness/readiness ran before the startup probe passed: %v", got)
	}
	if w.poll(); w.last != nil && w.last.Containers[0].Ready {
		t.Fatal("ready before the startup probe passed")
	}
	rt.set("started", true)
	w.until("ready", runningReady)
	time.Sleep(5 * secondUnit)
	if len(rt.calls("exec app: ok live")) == 0 || len(rt.calls("exec app: ok ready")) == 0 {
		t.Fatalf("liveness and readiness should run once started: %v", rt.calls("exec"))
	}
	n := len(rt.calls("exec app: flag started"))
	time.Sleep(5 * secondUnit)
	if m := len(rt.calls("exec app: flag started")); m != n {
		t.Fatalf("the startup probe kept running after it passed (%d → %d)", n, m)
	}
}

func TestProbeStartupFailureKills(t *testing.T) {
	a, _ := fakeAgent(t)
	c := spec("app")
	c.StartupProbe = execProbe(1, 2, "fail")
	a.assign(context.Background(), group("startfail", api.RestartAlways, c))
	w := watch(t, a, "startfail")
	w.until("restarted", func(u *hostapi.GroupUpdate) bool { return u.Containers[0].RestartCount >= 1 })
	w.untilEvent("Unhealthy", "app", "Startup probe failed")
	w.untilEvent("Killing", "app", "Container app failed startup probe, will be restarted")
}

func TestProbeHTTPOutcomes(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("/here", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	mux.HandleFunc("/away", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://elsewhere.invalid/", http.StatusFound)
	})
	mux.HandleFunc("/missing", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	for _, tt := range []struct {
		path, err, warn string
	}{
		{"/ok", "", ""},
		{"ok", "", ""}, // a path without its slash
		{"/here", "", ""},
		{"/away", "", "Probe terminated redirects, Response status: 302 Found"},
		{"/missing", "statuscode: 404", ""},
		{"/slow", "deadline exceeded", ""},
	} {
		t.Run(tt.path, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			out := httpProbe(ctx, "127.0.0.1", &api.HTTPGetAction{Path: tt.path, Port: port})
			if tt.err == "" && out.err != nil || tt.err != "" && (out.err == nil || !strings.Contains(out.err.Error(), tt.err)) {
				t.Fatalf("err %v, want %q", out.err, tt.err)
			}
			if out.warn != tt.warn {
				t.Fatalf("warning %q, want %q", out.warn, tt.warn)
			}
		})
	}
}

func TestProbeExecTimeout(t *testing.T) {
	a, _ := fakeAgent(t)
	c := spec("c")
	c.ReadinessProbe = &api.Probe{Exec: &api.ExecAction{Command: []string{"sleep", "1000"}}, PeriodSeconds: 1, TimeoutSeconds: 2}
	a.assign(context.Background(), group("exectimeout", api.RestartAlways, c))
	w := watch(t, a, "exectimeout")
	w.untilEvent("Unhealthy", "c", "Readiness probe failed: timed out after "+(2*secondUnit).String())
	if w.last.Containers[0].Ready {
		t.Fatal("ready with a probe that times out")
	}
}

func TestHookPostStartGatesRunning(t *testing.T) {
	a, rt := fakeAgent(t)
	c := spec("c")
	c.Lifecycle = &api.Lifecycle{PostStart: &api.Handler{Exec: &api.ExecAction{Command: []string{"block", "hook-done"}}}}
	c.ReadinessProbe = execProbe(1, 1, "ok", "ready")
	a.assign(context.Background(), group("poststart", api.RestartAlways, c))
	w := watch(t, a, "poststart")
	u := w.until("hook running", func(u *hostapi.GroupUpdate) bool {
		return len(rt.calls("exec c: block")) > 0 && u.Containers[0].StartedAt != nil
	})
	time.Sleep(5 * secondUnit)
	w.poll()
	u = w.last
	if cs := u.Containers[0]; u.Status != api.StatusPending || cs.State != api.ContainerWaiting || cs.Ready || cs.Reason != "ContainerCreating" {
		t.Fatalf("while postStart runs: status %s, container %+v", u.Status, cs)
	}
	if got := rt.calls("exec c: ok"); len(got) > 0 {
		t.Fatalf("probes ran during postStart: %v", got)
	}
	rt.set("hook-done", true)
	w.until("Running and ready", runningReady)
}

func TestHookPostStartFailureRestarts(t *testing.T) {
	for _, policy := range []api.RestartPolicy{api.RestartAlways, api.RestartNever} {
		t.Run(string(policy), func(t *testing.T) {
			a, _ := fakeAgent(t)
			c := spec("c")
			c.Lifecycle = &api.Lifecycle{PostStart: &api.Handler{Exec: &api.ExecAction{Command: []string{"fail"}}}}
			a.assign(context.Background(), group("psfail", policy, c))
			w := watch(t, a, "psfail")
			var cs api.ContainerStatus
			if policy == api.RestartNever {
				u := w.until("Failed", status(api.StatusFailed))
				cs = u.Containers[0]
			} else {
				u := w.until("restarted", func(u *hostapi.GroupUpdate) bool { return u.Containers[0].RestartCount >= 1 })
				cs = *u.Containers[0].LastState
			}
			if !strings.Contains(cs.Message, "PostStartHookError") || cs.ExitCode == nil || *cs.ExitCode != 137 {
				t.Fatalf("ended instance %+v", cs)
			}
			w.untilEvent("FailedPostStartHook", "c", "PostStartHook failed: command \"fail\" exited with 1: boom")
			w.untilEvent("Killing", "c", "FailedPostStartHook")
		})
	}
}

func TestHookPostStartHTTPAndTCP(t *testing.T) {
	a, _ := fakeAgent(t)
	hits := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits <- r.URL.Path
		w.WriteHeader(http.StatusInternalServerError) // a hook looks only at whether the request went through
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	h := spec("h")
	h.Lifecycle = &api.Lifecycle{PostStart: &api.Handler{HTTPGet: &api.HTTPGetAction{Path: "/started", Port: port}}}
	tc := spec("t")
	tc.Lifecycle = &api.Lifecycle{PostStart: &api.Handler{TCPSocket: &api.TCPSocketAction{Port: port}}}
	a.assign(context.Background(), group("hooks", api.RestartAlways, h, tc))
	w := watch(t, a, "hooks")
	w.until("Running and ready", func(u *hostapi.GroupUpdate) bool {
		return u.Status == api.StatusRunning && u.Containers[0].Ready && u.Containers[1].Ready
	})
	if p := <-hits; p != "/started" {
		t.Fatalf("postStart hit %q", p)
	}
}

func TestHookPreStopSharesTheGracePeriod(t *testing.T) {
	a, rt := fakeAgent(t)
	c := spec("c")
	c.Lifecycle = &api.Lifecycle{PreStop: &api.Handler{Exec: &api.ExecAction{Command: []string{"sleep", "100"}}}}
	g := group("prestop", api.RestartAlways, c)
	grace := int64(10) // 200ms
	g.Spec.TerminationGracePeriodSeconds = &grace
	a.assign(context.Background(), g)
	w := watch(t, a, "prestop")
	w.until("Running", runningReady)

	// A restart stops the container: preStop first, then SIGTERM with
	// what is left of the grace period.
	g2 := *g
	g2.RestartGeneration = 1
	a.assign(context.Background(), &g2)
	w.until("restarted", func(u *hostapi.GroupUpdate) bool { return u.RestartGeneration == 1 && runningReady(u) })
	if log := rt.calls(""); len(log) < 2 || log[0] != "exec c: sleep 100" || log[1] != "stop c" {
		t.Fatalf("calls %v, want preStop then stop", log)
	}
	st := rt.stopsOf("c")[0]
	if st.grace <= 0 || st.grace > 200*time.Millisecond-100*time.Millisecond {
		t.Fatalf("SIGTERM grace %s after a 100ms preStop in a 200ms grace period", st.grace)
	}

	// Delete with the grace period runs preStop; rm -f (grace 0) does not.
	g3 := g2
	g3.Deleting = true
	a.assign(context.Background(), &g3)
	w.until("Removed", func(u *hostapi.GroupUpdate) bool { return u.Removed })
	if n := len(rt.calls("exec c: sleep")); n != 2 {
		t.Fatalf("preStop ran %d times, want 2 (restart, delete)", n)
	}

	a.assign(context.Background(), group("force", api.RestartAlways, c))
	wf := watch(t, a, "force")
	wf.until("Running", runningReady)
	g4 := group("force", api.RestartAlways, c)
	zero := int64(0)
	g4.Spec.TerminationGracePeriodSeconds = &zero
	g4.Deleting = true
	a.assign(context.Background(), g4)
	wf.until("Removed", func(u *hostapi.GroupUpdate) bool { return u.Removed })
	if n := len(rt.calls("exec c: sleep")); n != 2 {
		t.Fatalf("rm -f ran preStop")
	}
	if st := rt.stopsOf("c"); st[len(st)-1].grace != 0 {
		t.Fatalf("rm -f stopped with grace %s", st[len(st)-1].grace)
	}
}

func TestHookPreStopBoundedByGrace(t *testing.T) {
	a, rt := fakeAgent(t)
	c := spec("c")
	c.Lifecycle = &api.Lifecycle{PreStop: &api.Handler{Exec: &api.ExecAction{Command: []string{"block", "never"}}}}
	c.LivenessProbe = execProbe(1, 1, "flag", "healthy")
	rt.set("healthy", true)
	g := group("hang", api.RestartAlways, c)
	grace := int64(5) // 100ms
	g.Spec.TerminationGracePeriodSeconds = &grace
	a.assign(context.Background(), g)
	w := watch(t, a, "hang")
	w.until("Running", runningReady)
	rt.set("healthy", false)
	start := time.Now()
	w.until("restarted", func(u *hostapi.GroupUpdate) bool { return u.Containers[0].RestartCount >= 1 })
	rt.set("healthy", true)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the kill took %s with a 100ms grace period", d)
	}
	if log := rt.calls("exec c: block"); len(log) == 0 {
		t.Fatal("the liveness kill did not run preStop")
	}
	if st := rt.stopsOf("c"); len(st) == 0 || st[0].grace != 0 {
		t.Fatalf("stops %+v: a preStop that used up the grace period leaves 0", st)
	}
	w.untilEvent("FailedPreStopHook", "c", "did not finish within the grace period")
}

func TestRunnerStatusFollowsPodPhase(t *testing.T) {
	code := func(n int) *int { return &n }
	running := api.ContainerStatus{State: api.ContainerRunning}
	exited := func(n int) api.ContainerStatus {
		return api.ContainerStatus{State: api.ContainerTerminated, ExitCode: code(n), Reason: map[bool]string{true: "Completed", false: "Error"}[n == 0]}
	}
	backoff := api.ContainerStatus{State: api.ContainerWaiting, Reason: "CrashLoopBackOff", LastState: &api.ContainerStatus{State: api.ContainerTerminated, ExitCode: code(1)}}
	creating := api.ContainerStatus{State: api.ContainerWaiting, Reason: "ContainerCreating"}
	type cs struct {
		st      api.ContainerStatus
		done    bool
		everRan bool
	}
	tests := []struct {
		name   string
		policy api.RestartPolicy
		ctrs   []cs
		want   api.Status
		reason string
	}{
		{"never: one failed, one running", api.RestartNever, []cs{{exited(1), true, true}, {running, false, true}}, api.StatusRunning, ""},
		{"never: one failed, one succeeded", api.RestartNever, []cs{{exited(0), true, true}, {exited(2), true, true}}, api.StatusFailed, "Error"},
		{"never: all succeeded", api.RestartNever, []cs{{exited(0), true, true}, {exited(0), true, true}}, api.StatusSucceeded, ""},
		{"onfailure: one succeeded, one restarting", api.RestartOnFailure, []cs{{exited(0), true, true}, {backoff, false, true}}, api.StatusRunning, ""},
		{"onfailure: all succeeded", api.RestartOnFailure, []cs{{exited(0), true, true}, {exited(0), true, true}}, api.StatusSucceeded, ""},
		{"always: all in back-off", api.RestartAlways, []cs{{backoff, false, true}, {backoff, false, true}}, api.StatusRunning, ""},
		{"one running, one not started yet", api.RestartAlways, []cs{{running, false, true}, {creating, false, false}}, api.StatusPending, "ContainerCreating"},
		{"first postStart still running", api.RestartAlways, []cs{{creating, false, true}}, api.StatusPending, "ContainerCreating"},
		{"never ran: cannot start", api.RestartAlways, []cs{{backoff, false, false}}, api.StatusPending, "CrashLoopBackOff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &runner{g: group("x", tt.policy), initDone: true}
			for i, c := range tt.ctrs {
				r.ctrs = append(r.ctrs, &ctr{spec: api.Container{Name: fmt.Sprint("c", i)}, st: c.st, done: c.done, everRan: c.everRan})
			}
			st, reason, _ := r.status()
			if st != tt.want || reason != tt.reason {
				t.Fatalf("status %s (%q), want %s (%q)", st, reason, tt.want, tt.reason)
			}
		})
	}
}

func TestRunnerNeverPolicyMixedContainers(t *testing.T) {
	a := testAgent(t)
	a.assign(context.Background(), group("mixed", api.RestartNever, spec("bad", "exit", "1", "5"), spec("good", "exit", "0", "300")))
	w := watch(t, a, "mixed")
	u := w.until("one failed, the other running", func(u *hostapi.GroupUpdate) bool {
		return u.Containers[0].State == api.ContainerTerminated && u.Containers[1].State == api.ContainerRunning
	})
	if u.Status != api.StatusRunning {
		t.Fatalf("status %s with one container still running", u.Status)
	}
	u = w.until("Failed", status(api.StatusFailed))
	if u.Reason != "Error" || !strings.Contains(u.Message, "bad") {
		t.Fatalf("failed with %q %q", u.Reason, u.Message)
	}
}
