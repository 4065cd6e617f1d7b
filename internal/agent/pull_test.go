package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/hostapi"
	"github.com/skiffhq/skiff/internal/image"
	"github.com/skiffhq/skiff/internal/image/registrytest"
	"github.com/skiffhq/skiff/internal/sandbox"
	"github.com/skiffhq/skiff/internal/sandbox/sim"
)

// Pull policies, pull failures and back-off, against a real registry and
// the simulated runtime.

func registryAgent(t *testing.T, insecure ...string) *Agent {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the image store unpacks layers with owners and device whiteouts: needs root")
	}
	rt, err := sim.New(sim.Config{})
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
	reg := image.RegistryConfig{Insecure: insecure, Retries: -1, StallTimeout: 2 * time.Second}
	if a.images, err = image.Open(t.TempDir(), image.WithRegistry(reg), image.WithLogger(log)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.images.Close() })
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

// pullWatcher collects a group's reports, events included.
type pullWatcher struct {
	mu     sync.Mutex
	last   map[string]hostapi.GroupUpdate
	events map[string][]api.Event
}

func (w *pullWatcher) poll(a *Agent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last == nil {
		w.last, w.events = map[string]hostapi.GroupUpdate{}, map[string][]api.Event{}
	}
	for _, u := range a.reporter.take() {
		w.last[u.ID] = u
		w.events[u.ID] = append(w.events[u.ID], u.Events...)
	}
}

func (w *pullWatcher) wait(t *testing.T, a *Agent, id, what string, timeout time.Duration, ok func(u hostapi.GroupUpdate) bool) hostapi.GroupUpdate {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		w.poll(a)
		w.mu.Lock()
		u, seen := w.last[id]
		w.mu.Unlock()
		if seen && ok(u) {
			return u
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s never reached %s; last report %+v; events %s", id, what, u, w.eventList(id))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (w *pullWatcher) eventList(id string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var parts []string
	for _, e := range w.events[id] {
		parts = append(parts, e.Reason+": "+e.Message)
	}
	return strings.Join(parts, " | ")
}

func (w *pullWatcher) hasEvent(id, reason, contains string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.events[id] {
		if e.Reason == reason && strings.Contains(e.Message, contains) {
			return true
		}
	}
	return false
}

func pullGroup(id, ref, policy string, creds ...api.ImageRegistryCredential) *api.Group {
	g := group(id, api.RestartAlways, api.Container{Name: "c", Image: ref, ImagePullPolicy: policy, Command: []string{"sleep", "1000"}})
	g.Spec.ImageRegistryCredentials = creds
	return g
}

func isStatus(s api.Status) func(u hostapi.GroupUpdate) bool {
	return func(u hostapi.GroupUpdate) bool { return u.Status == s }
}

func blobGETs(reqs []registrytest.Request) int {
	n := 0
	for _, q := range reqs {
		if q.IsBlobGET() {
			n++
		}
	}
	return n
}

func TestImagePullPolicies(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	reg.Push(t, "app/bb:1", registrytest.Busybox(t))
	a := registryAgent(t, reg.Host)
	ctx := context.Background()
	w := &pullWatcher{}
	ref := reg.Ref("app/bb:1")

	// Never, and not here: fails at once, without asking the registry.
	mark := reg.Mark()
	a.assign(ctx, pullGroup("never", ref, PullNever))
	u := w.wait(t, a, "never", "Failed", 10*time.Second, isStatus(api.StatusFailed))
	if u.Reason != "ErrImageNeverPull" {
		t.Errorf("never: %s %s", u.Reason, u.Message)
	}
	if got := reg.Since(mark); len(got) != 0 {
		t.Errorf("Never talked to the registry: %v", got)
	}

	// IfNotPresent (the default), not here: pulled, with events.
	mark = reg.Mark()
	a.assign(ctx, pullGroup("first", ref, ""))
	w.wait(t, a, "first", "Running", 20*time.Second, isStatus(api.StatusRunning))
	if !w.hasEvent("first", "Pulling", ref) || !w.hasEvent("first", "Pulled", "Successfully pulled") {
		t.Errorf("events: %s", w.eventList("first"))
	}
	if n := blobGETs(reg.Since(mark)); n != 2 { // config + layer
		t.Errorf("first pull fetched %d blobs", n)
	}

	// IfNotPresent, here: no registry traffic at all.
	mark = reg.Mark()
	a.assign(ctx, pullGroup("second", ref, PullIfNotPresent))
	w.wait(t, a, "second", "Running", 10*time.Second, isStatus(api.StatusRunning))
	if got := reg.Since(mark); len(got) != 0 {
		t.Errorf("IfNotPresent with the image present asked the registry: %v", got)
	}
	if !w.hasEvent("second", "Pulled", "already present") {
		t.Errorf("events: %s", w.eventList("second"))
	}

	// Always, here: the manifest is checked, no blob is fetched.
	mark = reg.Mark()
	a.assign(ctx, pullGroup("always", ref, PullAlways))
	w.wait(t, a, "always", "Running", 10*time.Second, isStatus(api.StatusRunning))
	got := reg.Since(mark)
	if len(got) == 0 || blobGETs(got) != 0 {
		t.Errorf("Always with the image present: %v", got)
	}
}

func TestImagePullFailureBacksOffThenRecovers(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{User: "bob", Password: "hunter2-pw"})
	a := registryAgent(t, reg.Host)
	ctx := context.Background()
	w := &pullWatcher{}
	ref := reg.Ref("later/bb:1")
	cred := api.ImageRegistryCredential{Server: reg.Host, UserName: "bob", Password: "hunter2-pw"}

	// Not pushed yet: ErrImagePull with the registry's reason.
	a.assign(ctx, pullGroup("later", ref, "", cred))
	u := w.wait(t, a, "later", "ErrImagePull", 10*time.Second, func(u hostapi.GroupUpdate) bool { return u.Reason == "ErrImagePull" })
	if u.Status != api.StatusPending || !strings.Contains(u.Message, "ImageNotFound") {
		t.Errorf("after a failed pull: %+v", u)
	}
	if !w.hasEvent("later", "Failed", "not found") {
		t.Errorf("events: %s", w.eventList("later"))
	}

	// Bad credentials: a clear reason, and the password is nowhere.
	a.assign(ctx, pullGroup("badcred", ref, "", api.ImageRegistryCredential{Server: reg.Host, UserName: "bob", Password: "not-it-pw"}))
	u = w.wait(t, a, "badcred", "ErrImagePull", 10*time.Second, func(u hostapi.GroupUpdate) bool { return u.Reason == "ErrImagePull" })
	if !strings.Contains(u.Message, "RegistryUnauthorized") || strings.Contains(w.eventList("badcred")+u.Message, "not-it-pw") {
		t.Errorf("bad credentials: %+v / %s", u, w.eventList("badcred"))
	}

	// Pushed now: the runner's retry picks it up.
	reg.Push(t, "later/bb:1", registrytest.Busybox(t))
	w.wait(t, a, "later", "Running", 30*time.Second, isStatus(api.StatusRunning))
	if !w.hasEvent("later", "Pulled", "Successfully pulled") {
		t.Errorf("events: %s", w.eventList("later"))
	}
}

func TestManyGroupsOfOneNewImagePullOnce(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	reg.Push(t, "app/many:1", registrytest.Busybox(t))
	a := registryAgent(t, reg.Host)
	ctx := context.Background()
	w := &pullWatcher{}
	mark := reg.Mark()
	const n = 40
	for i := 0; i < n; i++ {
		a.assign(ctx, pullGroup(fmt.Sprintf("g%d", i), reg.Ref("app/many:1"), ""))
	}
	for i := 0; i < n; i++ {
		w.wait(t, a, fmt.Sprintf("g%d", i), "Running", 30*time.Second, isStatus(api.StatusRunning))
	}
	if got := blobGETs(reg.Since(mark)); got != 2 {
		t.Errorf("%d groups of one new image made %d blob GETs; want 2 (config + layer)", n, got)
	}
	if u := a.images.SizeOf([]string{mustDigest(t, a, reg.Ref("app/many:1"))}); u == 0 {
		t.Error("no size")
	}
}

func mustDigest(t *testing.T, a *Agent, ref string) string {
	t.Helper()
	r, err := a.images.Resolve(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	return r.Digest
}
