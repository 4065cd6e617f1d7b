// Package sandboxtest is the conformance suite every sandbox.Runtime
// implementation runs (linux, sim), plus helpers to build test root
// filesystems.
package sandboxtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/skiffhq/skiff/internal/sandbox"
)

// Option adjusts the suite to what an implementation can do.
type Option func(*suite)

// Simulated says the runtime runs no real programs: checks that depend on
// what a program does (its output, its exit code, its environment, exec
// output) are skipped. Lifecycle, errors and recovery are still checked.
func Simulated() Option { return func(s *suite) { s.simulated = true } }

// AfterEach adds a check run when each test has cleaned up (the sandboxes
// removed and the runtime closed): a leak check of the implementation.
func AfterEach(check func(t *testing.T, stateDir string)) Option {
	return func(s *suite) { s.after = append(s.after, check) }
}

type suite struct {
	newRuntime func(t *testing.T, stateDir string) sandbox.Runtime
	rootfs     []string
	simulated  bool
	after      []func(t *testing.T, stateDir string)
}

// RunConformance runs the suite against runtimes made by newRuntime, which
// the suite closes. rootfs is a root filesystem with busybox (see
// BusyboxRootfs); simulated runtimes may get any value.
func RunConformance(t *testing.T, newRuntime func(t *testing.T, stateDir string) sandbox.Runtime, rootfs []string, opts ...Option) {
	s := &suite{newRuntime: newRuntime, rootfs: rootfs}
	for _, o := range opts {
		o(s)
	}
	for _, tc := range []struct {
		name      string
		processes bool
		fn        func(*testing.T, *env)
	}{
		{"Lifecycle", false, testLifecycle},
		{"Errors", false, testErrors},
		{"Recover", false, testRecover},
		{"RemoveLeavesNothing", false, testRemove},
		{"Stats", false, testStats},
		{"ExitCode", true, testExitCode},
		{"ArgsEnvWorkdir", true, testArgsEnvWorkdir},
		{"StopGrace", true, testStopGrace},
		{"Logs", true, testLogs},
		{"LogsFollow", true, testLogsFollow},
		{"Exec", true, testExec},
		{"CannotRun", true, testCannotRun},
		{"Volumes", true, testVolumes},
		{"VolumeUpdate", false, testVolumeUpdate}, // volumes.go
		// sandbox.Pool, for runtimes that implement it.
		{"PoolClaim", false, testPoolClaim},
		{"PoolMiss", false, testPoolMiss},
		{"PoolDrain", false, testPoolDrain},
		{"PoolRecover", false, testPoolRecover},
		{"PoolConcurrentClaims", false, testPoolConcurrentClaims},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.processes && s.simulated {
				t.Skip("needs a runtime that runs real programs")
			}
			tc.fn(t, s.env(t))
		})
	}
}

// env is one test's runtime over its own state directory.
type env struct {
	s        *suite
	t        *testing.T
	stateDir string
	rt       sandbox.Runtime
	exits    *exitLog
	ctx      context.Context
}

func (s *suite) env(t *testing.T) *env {
	dir := t.TempDir()
	e := &env{s: s, t: t, stateDir: dir, ctx: t.Context()}
	t.Cleanup(func() {
		for _, check := range s.after {
			check(t, dir)
		}
	})
	e.open()
	return e
}

// open starts a runtime over the env's state dir; cleanup removes every
// sandbox it knows (leak checks run after) and closes it.
func (e *env) open() {
	rt := e.s.newRuntime(e.t, e.stateDir)
	e.rt = rt
	e.exits = collectExits(rt)
	e.t.Cleanup(func() {
		if e.rt != rt { // closed by the test
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		states, _ := rt.Recover(ctx)
		for _, st := range states {
			if err := rt.RemoveSandbox(ctx, st.ID); err != nil {
				e.t.Errorf("cleanup: remove sandbox %s: %v", st.ID, err)
			}
		}
		if p, ok := rt.(sandbox.Pool); ok {
			if _, err := p.DrainPool(ctx, "", -1); err != nil {
				e.t.Errorf("cleanup: drain pool: %v", err)
			}
		}
		_ = rt.Close()
	})
}

func (e *env) sandbox(id string) string {
	e.t.Helper()
	if _, err := e.rt.CreateSandbox(e.ctx, sandbox.SandboxConfig{ID: id, Hostname: id}); err != nil {
		e.t.Fatalf("CreateSandbox(%s): %v", id, err)
	}
	return id
}

func (e *env) container(name string, args ...string) sandbox.ContainerConfig {
	return sandbox.ContainerConfig{Name: name, RootfsLayers: e.s.rootfs, Args: args}
}

func (e *env) start(sb string, cfg sandbox.ContainerConfig) *sandbox.ContainerInfo {
	e.t.Helper()
	info, err := e.rt.StartContainer(e.ctx, sb, cfg)
	if err != nil {
		e.t.Fatalf("StartContainer(%s/%s): %v", sb, cfg.Name, err)
	}
	return info
}

func (e *env) logs(sb, name string, opts sandbox.LogOptions) string {
	e.t.Helper()
	rc, err := e.rt.Logs(e.ctx, sb, name, opts)
	if err != nil {
		e.t.Fatalf("Logs(%s/%s, %+v): %v", sb, name, opts, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		e.t.Fatalf("read logs: %v", err)
	}
	return string(b)
}

// exitLog keeps every exit event of a runtime for tests to wait on.
type exitLog struct {
	mu     sync.Mutex
	events []sandbox.ExitEvent
	seen   chan struct{}
}

func collectExits(rt sandbox.Runtime) *exitLog {
	l := &exitLog{seen: make(chan struct{}, 1)}
	go func() {
		for ev := range rt.Exits() {
			l.mu.Lock()
			l.events = append(l.events, ev)
			l.mu.Unlock()
			select {
			case l.seen <- struct{}{}:
			default:
			}
		}
	}()
	return l
}

// wait returns the n-th (1-based) exit event of sb/name.
func (e *env) waitExit(sb, name string, n int) sandbox.ExitEvent {
	e.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		e.exits.mu.Lock()
		k := 0
		for _, ev := range e.exits.events {
			if ev.SandboxID == sb && ev.Name == name {
				if k++; k == n {
					e.exits.mu.Unlock()
					return ev
				}
			}
		}
		e.exits.mu.Unlock()
		select {
		case <-e.exits.seen:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			e.t.Fatalf("no exit #%d of %s/%s within 20s", n, sb, name)
		}
	}
}

func (e *env) exitCount(sb, name string) int {
	e.exits.mu.Lock()
	defer e.exits.mu.Unlock()
	k := 0
	for _, ev := range e.exits.events {
		if ev.SandboxID == sb && ev.Name == name {
			k++
		}
	}
	return k
}

func findState(states []sandbox.SandboxState, id string) *sandbox.SandboxState {
	for i := range states {
		if states[i].ID == id {
			return &states[i]
		}
	}
	return nil
}

func findContainer(st *sandbox.SandboxState, name string) *sandbox.ContainerState {
	for i := range st.Containers {
		if st.Containers[i].Name == name {
			return &st.Containers[i]
		}
	}
	return nil
}

func testLifecycle(t *testing.T, e *env) {
	sb := e.sandbox("life")
	// Idempotent create.
	info, err := e.rt.CreateSandbox(e.ctx, sandbox.SandboxConfig{ID: sb, Hostname: sb})
	if err != nil || info.ID != sb {
		t.Fatalf("second CreateSandbox = %+v, %v", info, err)
	}
	ci := e.start(sb, e.container("app", "sleep", "1000"))
	if ci.Name != "app" || ci.StartedAt.IsZero() {
		t.Errorf("ContainerInfo = %+v", ci)
	}
	if _, err := e.rt.StartContainer(e.ctx, sb, e.container("app", "sleep", "1000")); !errors.Is(err, sandbox.ErrExists) {
		t.Errorf("start of a running name: %v, want ErrExists", err)
	}
	states, err := e.rt.Recover(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st := findState(states, sb); st == nil || findContainer(st, "app") == nil || !findContainer(st, "app").Running {
		t.Fatalf("Recover does not show app running: %+v", states)
	}
	if err := e.rt.StopContainer(e.ctx, sb, "app", 100*time.Millisecond); err != nil {
		t.Fatalf("StopContainer: %v", err)
	}
	ev := e.waitExit(sb, "app", 1)
	if ev.FinishedAt.IsZero() {
		t.Errorf("exit event without time: %+v", ev)
	}
	// Stopping a stopped container is fine; the name can start again.
	if err := e.rt.StopContainer(e.ctx, sb, "app", time.Second); err != nil {
		t.Errorf("second StopContainer: %v", err)
	}
	e.start(sb, e.container("app", "sleep", "1000"))
	if err := e.rt.RemoveSandbox(e.ctx, sb); err != nil {
		t.Fatalf("RemoveSandbox: %v", err)
	}
	e.waitExit(sb, "app", 2)
	if err := e.rt.RemoveSandbox(e.ctx, sb); err != nil {
		t.Errorf("second RemoveSandbox: %v", err)
	}
	states, _ = e.rt.Recover(e.ctx)
	if findState(states, sb) != nil {
		t.Errorf("removed sandbox still listed: %+v", states)
	}
}

func testErrors(t *testing.T, e *env) {
	ctx := e.ctx
	if _, err := e.rt.StartContainer(ctx, "nosuch", e.container("a", "true")); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("start in missing sandbox: %v, want ErrNotFound", err)
	}
	sb := e.sandbox("errs")
	if _, err := e.rt.StartContainer(ctx, sb, e.container("a")); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("start without args: %v, want ErrInvalid", err)
	}
	if _, err := e.rt.StartContainer(ctx, sb, e.container("../x", "true")); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("bad name: %v, want ErrInvalid", err)
	}
	if err := e.rt.StopContainer(ctx, sb, "nosuch", 0); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("stop missing container: %v, want ErrNotFound", err)
	}
	if _, err := e.rt.Logs(ctx, sb, "nosuch", sandbox.LogOptions{Tail: -1}); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("logs of missing container: %v, want ErrNotFound", err)
	}
	if _, err := e.rt.Exec(ctx, sb, "nosuch", sandbox.ExecConfig{Args: []string{"true"}}); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("exec in missing container: %v, want ErrNotFound", err)
	}
	if _, err := e.rt.Stats(ctx, "nosuch"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("stats of missing sandbox: %v, want ErrNotFound", err)
	}
	if err := e.rt.RemoveSandbox(ctx, "nosuch"); err != nil {
		t.Errorf("remove missing sandbox: %v", err)
	}
	e.start(sb, e.container("a", "sleep", "1000"))
	if err := e.rt.StopContainer(ctx, sb, "a", 0); err != nil {
		t.Fatal(err)
	}
	e.waitExit(sb, "a", 1)
	if _, err := e.rt.Exec(ctx, sb, "a", sandbox.ExecConfig{Args: []string{"true"}}); !errors.Is(err, sandbox.ErrNotRunning) {
		t.Errorf("exec in stopped container: %v, want ErrNotRunning", err)
	}
}

func testRecover(t *testing.T, e *env) {
	sb := e.sandbox("rec")
	runInfo := e.start(sb, e.container("run", "sleep", "1000"))
	short := e.container("short", "sleep", "1000")
	if !e.s.simulated {
		short.Args = []string{"sh", "-c", "exit 2"}
	}
	e.start(sb, short)
	if e.s.simulated {
		if err := e.rt.StopContainer(e.ctx, sb, "short", 0); err != nil {
			t.Fatal(err)
		}
	}
	e.waitExit(sb, "short", 1)
	// And one that dies while no runtime watches.
	orphan := e.start(sb, e.container("orphan", "sleep", "1000"))

	if err := e.rt.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	e.rt = nil
	if !e.s.simulated {
		if err := syscall.Kill(orphan.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitDead(t, orphan.PID)
	}
	e.open() // a new runtime over the same state
	states, err := e.rt.Recover(e.ctx)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	st := findState(states, sb)
	if st == nil {
		t.Fatalf("Recover lost sandbox %s: %+v", sb, states)
	}
	run := findContainer(st, "run")
	if run == nil || !run.Running || run.PID != runInfo.PID {
		t.Fatalf("running container not adopted: %+v (started pid %d)", run, runInfo.PID)
	}
	sh := findContainer(st, "short")
	if sh == nil || sh.Running || sh.Exit == nil {
		t.Fatalf("exited container not reported exited: %+v", sh)
	}
	if !e.s.simulated && sh.Exit.ExitCode != 2 {
		t.Errorf("exit code of short = %d, want 2", sh.Exit.ExitCode)
	}
	// The adopted container's exit is seen by the new runtime.
	if err := e.rt.StopContainer(e.ctx, sb, "run", 0); err != nil {
		t.Fatalf("StopContainer after recover: %v", err)
	}
	ev := e.waitExit(sb, "run", 1)
	if ev.PID != runInfo.PID {
		t.Errorf("exit event %+v, want pid %d", ev, runInfo.PID)
	}
	if !e.s.simulated {
		o := findContainer(st, "orphan")
		if o == nil || o.Running || o.Exit == nil || o.Exit.Message == "" && o.Exit.ExitCode != 137 {
			t.Errorf("container killed while no runtime watched: %+v", o)
		}
	}
	// The name can be started again by the new runtime, in the old sandbox.
	e.start(sb, e.container("run", "sleep", "1000"))
	if err := e.rt.RemoveSandbox(e.ctx, sb); err != nil {
		t.Fatal(err)
	}
}

// waitDead waits until pid has exited (it may stay a zombie).
func waitDead(t *testing.T, pid int) {
	for range 500 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		if i := bytes.LastIndexByte(b, ')'); i > 0 && len(b) > i+2 && (b[i+2] == 'Z' || b[i+2] == 'X') {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d does not die", pid)
}

func testRemove(t *testing.T, e *env) {
	sb := e.sandbox("rm")
	e.start(sb, e.container("a", "sleep", "1000"))
	e.start(sb, e.container("b", "sleep", "1000"))
	if err := e.rt.RemoveSandbox(e.ctx, sb); err != nil {
		t.Fatalf("RemoveSandbox: %v", err)
	}
	e.waitExit(sb, "a", 1)
	e.waitExit(sb, "b", 1)
	if _, err := e.rt.Stats(e.ctx, sb); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("Stats after remove: %v, want ErrNotFound", err)
	}
	if _, err := e.rt.StartContainer(e.ctx, sb, e.container("c", "sleep", "1")); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("start after remove: %v, want ErrNotFound", err)
	}
	// The ID can be used again.
	e.sandbox(sb)
	if err := e.rt.RemoveSandbox(e.ctx, sb); err != nil {
		t.Fatal(err)
	}
}

func testStats(t *testing.T, e *env) {
	sb := e.sandbox("stats")
	e.start(sb, e.container("a", "sleep", "1000"))
	st, err := e.rt.Stats(e.ctx, sb)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if _, ok := st.Containers["a"]; !ok || st.Time.IsZero() {
		t.Errorf("Stats = %+v", st)
	}
	if !e.s.simulated && (st.Pids < 1 || st.Containers["a"].Pids < 1 || st.MemoryUsed == 0) {
		t.Errorf("Stats shows no use: %+v", st)
	}
}

func testExitCode(t *testing.T, e *env) {
	sb := e.sandbox("exit")
	e.start(sb, e.container("three", "sh", "-c", "exit 3"))
	if ev := e.waitExit(sb, "three", 1); ev.ExitCode != 3 || ev.Signal != 0 || ev.OOMKilled {
		t.Errorf("exit = %+v, want code 3", ev)
	}
	// A workload killed by a signal exits 128+signal.
	e.start(sb, e.container("killed", "sleep", "1000"))
	if err := e.rt.StopContainer(e.ctx, sb, "killed", 0); err != nil {
		t.Fatal(err)
	}
	if ev := e.waitExit(sb, "killed", 1); ev.ExitCode != 137 || ev.Signal != 9 {
		t.Errorf("exit = %+v, want 137 by signal 9", ev)
	}
}

func testArgsEnvWorkdir(t *testing.T, e *env) {
	sb := e.sandbox("args")
	cfg := e.container("a", "sh", "-c", `echo "$FOO|$0|$1|$(pwd)|$(id -u):$(id -g)|$(hostname)"`, "x y", "z")
	cfg.Env = []string{"FOO=bar baz"}
	cfg.WorkingDir = "/tmp"
	e.start(sb, cfg)
	e.waitExit(sb, "a", 1)
	want := "bar baz|x y|z|/tmp|0:0|args\n"
	if got := e.logs(sb, "a", sandbox.LogOptions{Tail: -1}); got != want {
		t.Errorf("output %q, want %q", got, want)
	}
	cfg = e.container("user", "sh", "-c", `echo "$(id -u):$(id -g) $HOME $PATH"`)
	cfg.UID, cfg.GID = 1000, 1000
	cfg.WorkingDir = "/home/user"
	cfg.Env = []string{"HOME=/home/user"}
	e.start(sb, cfg)
	e.waitExit(sb, "user", 1)
	if got := e.logs(sb, "user", sandbox.LogOptions{Tail: -1}); !strings.HasPrefix(got, "1000:1000 /home/user /") {
		t.Errorf("output %q, want uid/gid 1000, HOME and a default PATH", got)
	}
}

func testStopGrace(t *testing.T, e *env) {
	sb := e.sandbox("stop")
	// A workload that handles SIGTERM gets to finish.
	e.start(sb, e.container("polite", "sh", "-c", `trap 'echo term; exit 7' TERM; echo ready; while :; do sleep 0.05; done`))
	waitLog(t, e, sb, "polite", "ready")
	t0 := time.Now()
	if err := e.rt.StopContainer(e.ctx, sb, "polite", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("stop of a polite container took %v", d)
	}
	if ev := e.waitExit(sb, "polite", 1); ev.ExitCode != 7 {
		t.Errorf("exit = %+v, want 7 from the TERM trap", ev)
	}
	if got := e.logs(sb, "polite", sandbox.LogOptions{Tail: -1}); !strings.Contains(got, "term") {
		t.Errorf("log %q lacks the trap's output", got)
	}
	// One that ignores it is killed after the grace period.
	e.start(sb, e.container("stubborn", "sh", "-c", `trap '' TERM; echo ready; while :; do sleep 0.05; done`))
	waitLog(t, e, sb, "stubborn", "ready")
	t0 = time.Now()
	if err := e.rt.StopContainer(e.ctx, sb, "stubborn", 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 300*time.Millisecond {
		t.Errorf("stop returned after %v, before the grace period", d)
	}
	if ev := e.waitExit(sb, "stubborn", 1); ev.ExitCode != 137 || ev.Signal != 9 {
		t.Errorf("exit = %+v, want SIGKILL", ev)
	}
}

func waitLog(t *testing.T, e *env, sb, name, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(e.logs(sb, name, sandbox.LogOptions{Tail: -1}), want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s/%s never logged %q", sb, name, want)
}

func testLogs(t *testing.T, e *env) {
	sb := e.sandbox("logs")
	e.start(sb, e.container("a", "sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done; echo err >&2"))
	e.waitExit(sb, "a", 1)
	all := "line1\nline2\nline3\nline4\nline5\nerr\n"
	if got := e.logs(sb, "a", sandbox.LogOptions{Tail: -1}); got != all {
		t.Errorf("all: %q, want %q", got, all)
	}
	if got := e.logs(sb, "a", sandbox.LogOptions{Tail: 2}); got != "line5\nerr\n" {
		t.Errorf("tail 2: %q", got)
	}
	if got := e.logs(sb, "a", sandbox.LogOptions{Tail: 0}); got != "" {
		t.Errorf("tail 0: %q", got)
	}
	if got := e.logs(sb, "a", sandbox.LogOptions{Tail: 100}); got != all {
		t.Errorf("tail 100: %q", got)
	}
	ts := e.logs(sb, "a", sandbox.LogOptions{Tail: -1, Timestamps: true})
	lines := strings.Split(strings.TrimSuffix(ts, "\n"), "\n")
	if len(lines) != 6 {
		t.Fatalf("timestamps: %q", ts)
	}
	for _, l := range lines {
		stamp, rest, _ := strings.Cut(l, " ")
		when, err := time.Parse(time.RFC3339Nano, stamp)
		if err != nil || !strings.HasPrefix(rest, "line") && rest != "err" {
			t.Errorf("timestamped line %q: %v", l, err)
		}
		if time.Since(when) > time.Minute || time.Until(when) > time.Minute {
			t.Errorf("timestamp %v is not now", when)
		}
	}
	if got := e.logs(sb, "a", sandbox.LogOptions{Tail: -1, Since: time.Now().Add(time.Hour)}); got != "" {
		t.Errorf("since the future: %q", got)
	}
	if got := e.logs(sb, "a", sandbox.LogOptions{Tail: -1, Since: time.Now().Add(-time.Hour)}); got != all {
		t.Errorf("since an hour ago: %q", got)
	}
	if _, err := e.rt.Logs(e.ctx, sb, "a", sandbox.LogOptions{Previous: true, Tail: -1}); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("previous of a first instance: %v, want ErrNotFound", err)
	}
	// A restart keeps the previous instance's log.
	e.start(sb, e.container("a", "echo", "second"))
	e.waitExit(sb, "a", 2)
	if got := e.logs(sb, "a", sandbox.LogOptions{Tail: -1}); got != "second\n" {
		t.Errorf("current after restart: %q", got)
	}
	if got := e.logs(sb, "a", sandbox.LogOptions{Tail: -1, Previous: true}); got != all {
		t.Errorf("previous after restart: %q", got)
	}
}

func testLogsFollow(t *testing.T, e *env) {
	sb := e.sandbox("follow")
	e.start(sb, e.container("a", "sh", "-c", "echo one; sleep 0.5; echo two; sleep 0.5; printf three"))
	rc, err := e.rt.Logs(e.ctx, sb, "a", sandbox.LogOptions{Tail: -1, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(rc)
		done <- string(b)
	}()
	select {
	case got := <-done:
		if got != "one\ntwo\nthree" {
			t.Errorf("follow: %q", got)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("follow did not end with the container")
	}
	// Follow stops with ctx too.
	e.start(sb, e.container("b", "sh", "-c", "echo x; sleep 1000"))
	ctx, cancel := context.WithCancel(e.ctx)
	rc, err = e.rt.Logs(ctx, sb, "b", sandbox.LogOptions{Tail: -1, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	go func() { time.Sleep(700 * time.Millisecond); cancel() }()
	_, _ = io.Copy(&buf, rc)
	rc.Close()
	if buf.String() != "x\n" {
		t.Errorf("follow until cancel: %q", buf.String())
	}
}

func testExec(t *testing.T, e *env) {
	sb := e.sandbox("exec")
	cfg := e.container("a", "sleep", "1000")
	cfg.Env = []string{"FROM_CONTAINER=1"}
	e.start(sb, cfg)
	var out, errb bytes.Buffer
	code, err := e.rt.Exec(e.ctx, sb, "a", sandbox.ExecConfig{
		Args:   []string{"sh", "-c", `echo "hi $FROM_CONTAINER $EXTRA $(hostname)"; cat; echo oops >&2; exit 4`},
		Env:    []string{"EXTRA=x"},
		Stdin:  strings.NewReader("from stdin\n"),
		Stdout: &out, Stderr: &errb,
	})
	if err != nil || code != 4 {
		t.Fatalf("Exec = %d, %v; want 4 (stderr %q)", code, err, errb.String())
	}
	if out.String() != "hi 1 x exec\nfrom stdin\n" || errb.String() != "oops\n" {
		t.Errorf("stdout %q stderr %q", out.String(), errb.String())
	}
	// Exec sees the container's processes and files.
	out.Reset()
	if code, err := e.rt.Exec(e.ctx, sb, "a", sandbox.ExecConfig{Args: []string{"sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; touch /made-by-exec"}, Stdout: &out}); err != nil || code != 0 {
		t.Fatalf("Exec = %d, %v", code, err)
	}
	if out.String() != "sleep 1000 " {
		t.Errorf("pid 1 seen by exec: %q", out.String())
	}
	if code, _ := e.rt.Exec(e.ctx, sb, "a", sandbox.ExecConfig{Args: []string{"test", "-f", "/made-by-exec"}}); code != 0 {
		t.Errorf("file made by one exec not seen by the next")
	}
	// A TTY.
	out.Reset()
	resize := make(chan sandbox.TermSize, 1)
	resize <- sandbox.TermSize{Rows: 33, Cols: 77}
	code, err = e.rt.Exec(e.ctx, sb, "a", sandbox.ExecConfig{
		Args: []string{"sh", "-c", "sleep 0.2; test -t 0 && echo tty; stty size"}, TTY: true,
		Stdout: &out, Resize: resize,
	})
	if err != nil || code != 0 {
		t.Fatalf("Exec TTY = %d, %v", code, err)
	}
	if got := strings.ReplaceAll(out.String(), "\r", ""); got != "tty\n33 77\n" {
		t.Errorf("tty output %q", got)
	}
	if _, err := e.rt.Exec(e.ctx, sb, "a", sandbox.ExecConfig{Args: []string{"nosuchbin"}}); !errors.Is(err, sandbox.ErrCannotRun) || !strings.Contains(err.Error(), "nosuchbin") {
		t.Errorf("exec of a missing binary: %v, want ErrCannotRun naming it", err)
	}
}

func testCannotRun(t *testing.T, e *env) {
	sb := e.sandbox("cannot")
	_, err := e.rt.StartContainer(e.ctx, sb, e.container("a", "nosuchbin"))
	if !errors.Is(err, sandbox.ErrCannotRun) || !strings.Contains(err.Error(), `"nosuchbin": executable file not found in $PATH`) {
		t.Errorf("missing binary: %v", err)
	}
	cfg := e.container("b", "true")
	cfg.WorkingDir = "/no/such/dir"
	_, err = e.rt.StartContainer(e.ctx, sb, cfg)
	if !errors.Is(err, sandbox.ErrCannotRun) || !strings.Contains(err.Error(), "/no/such/dir") {
		t.Errorf("missing working dir: %v", err)
	}
	// The sandbox still works.
	e.start(sb, e.container("c", "true"))
	if ev := e.waitExit(sb, "c", 1); ev.ExitCode != 0 {
		t.Errorf("exit %+v", ev)
	}
	if n := e.exitCount(sb, "a") + e.exitCount(sb, "b"); n != 0 {
		t.Errorf("%d exit events for containers that never ran", n)
	}
}

func testVolumes(t *testing.T, e *env) {
	hostDir := t.TempDir()
	// A container's root need not be the host's (user namespaces): a
	// host directory it writes to must let any user write.
	if err := os.Chmod(hostDir, 0o777); err != nil {
		t.Fatal(err)
	}
	cfg := sandbox.SandboxConfig{
		ID: "vols", Hostname: "vols",
		Nameservers: []string{"10.0.0.53"}, Searches: []string{"ns.svc.cluster.local"},
		HostAliases: map[string][]string{"10.1.2.3": {"db", "db.local"}},
		Volumes: []sandbox.VolumeConfig{
			{Name: "shared", Kind: "emptyDir"},
			{Name: "mem", Kind: "memory", SizeLimit: 1 << 20},
			{Name: "cfg", Kind: "files", Files: []sandbox.File{{Path: "app/conf.txt", Content: []byte("hello conf"), Mode: 0o600}}},
			{Name: "host", Kind: "hostPath", HostPath: hostDir},
		},
	}
	if _, err := e.rt.CreateSandbox(e.ctx, cfg); err != nil {
		t.Fatal(err)
	}
	mounts := []sandbox.Mount{
		{Volume: "shared", Destination: "/shared"},
		{Volume: "mem", Destination: "/mem"},
		{Volume: "cfg", Destination: "/etc/app", SubPath: "app", ReadOnly: true},
		{Volume: "host", Destination: "/host"},
	}
	w := e.container("writer", "sh", "-c", "echo shared > /shared/f; echo mem > /mem/f; echo host > /host/f; cat /etc/app/conf.txt; echo; touch /etc/app/x 2>/dev/null || echo ro; grep -c 10.0.0.53 /etc/resolv.conf; grep db.local /etc/hosts; cat /etc/hostname; df /mem | grep -c tmpfs")
	w.Mounts = mounts
	e.start("vols", w)
	e.waitExit("vols", "writer", 1)
	want := "hello conf\nro\n1\n10.1.2.3\tdb db.local\nvols\n1\n"
	if got := e.logs("vols", "writer", sandbox.LogOptions{Tail: -1}); got != want {
		t.Errorf("writer: %q, want %q", got, want)
	}
	r := e.container("reader", "sh", "-c", "cat /shared/f /mem/f /host/f")
	r.Mounts = mounts
	e.start("vols", r)
	e.waitExit("vols", "reader", 1)
	if got := e.logs("vols", "reader", sandbox.LogOptions{Tail: -1}); got != "shared\nmem\nhost\n" {
		t.Errorf("reader: %q", got)
	}
	bad := e.container("bad", "true")
	bad.Mounts = []sandbox.Mount{{Volume: "nosuch", Destination: "/x"}}
	if _, err := e.rt.StartContainer(e.ctx, "vols", bad); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("mount of unknown volume: %v, want ErrInvalid", err)
	}
}
