package agent

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
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

func testAgent(t *testing.T) *Agent {
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
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := New(Config{Server: "x:1", DataDir: t.TempDir(), Name: "test", BackoffBase: 20 * time.Millisecond, BackoffMax: 80 * time.Millisecond,
		NewRuntime: func(string) (sandbox.Runtime, error) { return rt, nil }, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	a.rt = rt
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
	g := group("noimg", api.RestartAlways, api.Container{Name: "c", Image: "nosuch:1"})
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
