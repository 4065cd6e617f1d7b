package tenancy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
)

// A resize moves the group's charge in the same transaction as the new
// spec, refuses growth past the quota (changing nothing), and splits the
// billing at the change: the old rate up to it, the new one after, with no
// second billed twice and the same report from a restarted manager.
func TestUpdateGroupChargesAndMeters(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	clock := func() time.Time { return now }
	m := New(st, Config{Now: clock})
	if _, err := m.CreateAccount(ctx, api.CreateAccountRequest{Name: "acme", Quota: api.Quota{MilliCPU: 3000}}); err != nil {
		t.Fatal(err)
	}
	g := &api.Group{ID: "g-1", Name: "one", AccountID: "acme", Status: api.StatusPending,
		Spec: api.GroupSpec{CPU: 1000, Memory: 1 << 30, Containers: []api.Container{{Name: "a"}}}}
	if _, err := m.CreateGroup(ctx, g); err != nil {
		t.Fatal(err)
	}
	sched := t0
	if _, err := st.UpdateGroup(ctx, "g-1", func(g *api.Group) error { g.Status, g.ScheduledAt = api.StatusRunning, &sched; return nil }); err != nil {
		t.Fatal(err)
	}

	now = t0.Add(10*time.Second + 300*time.Millisecond)
	_, err := m.UpdateGroup(ctx, "g-1", func(g *api.Group) error { g.Spec.CPU = 4000; return nil })
	if !errors.Is(err, errdefs.ErrQuota) {
		t.Fatalf("growth past the quota: %v", err)
	}
	if u, _ := m.Usage(ctx, "acme"); u.MilliCPU != 1000 {
		t.Fatalf("refused update moved the charge: %+v", u)
	}
	up, err := m.UpdateGroup(ctx, "g-1", func(g *api.Group) error { g.Spec.CPU = 2000; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if up.MeterFrom == nil || !up.MeterFrom.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("meterFrom %v", up.MeterFrom)
	}
	if u, _ := m.Usage(ctx, "acme"); u.MilliCPU != 2000 || u.Groups != 1 {
		t.Fatalf("usage after resize: %+v", u)
	}
	// Tags only: no new interval.
	if up, err = m.UpdateGroup(ctx, "g-1", func(g *api.Group) error { g.Spec.Tags = map[string]string{"a": "b"}; return nil }); err != nil || !up.MeterFrom.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("tag update: %v %+v", err, up.MeterFrom)
	}

	now = t0.Add(30 * time.Second)
	for _, mgr := range []*Manager{m, New(st, Config{Now: clock})} { // and after a restart
		cur, _ := st.GetGroup(ctx, "g-1")
		rep, err := mgr.Report(ctx, "acme", []*api.Group{cur}, t0, t0.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Lines) != 2 || rep.Lines[0].VCPU != 1 || rep.Lines[0].Seconds != 10 || rep.Lines[0].Open ||
			rep.Lines[1].VCPU != 2 || rep.Lines[1].Seconds != 20 || !rep.Lines[1].Open || rep.VCPUSeconds != 50 {
			t.Fatalf("report: %+v", rep)
		}
	}
}

// Resizes racing creates never take an account past its quota, and the
// counters stay equal to what the groups that exist ask for.
func TestUpdateRacesCreates(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	m := New(st, Config{})
	if _, err := m.CreateAccount(ctx, api.CreateAccountRequest{Name: "acme", Quota: api.Quota{MilliCPU: 10000}}); err != nil {
		t.Fatal(err)
	}
	mk := func(id string) *api.Group {
		return &api.Group{ID: id, Name: id, AccountID: "acme", Status: api.StatusPending, Spec: api.GroupSpec{CPU: 1000, Containers: []api.Container{{Name: "a"}}}}
	}
	for i := range 5 {
		if _, err := m.CreateGroup(ctx, mk(fmt.Sprintf("g-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, err := m.UpdateGroup(ctx, fmt.Sprintf("g-%d", i), func(g *api.Group) error { g.Spec.CPU = 3000; return nil })
			if err != nil && !errors.Is(err, errdefs.ErrQuota) {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			if _, err := m.CreateGroup(ctx, mk(fmt.Sprintf("n-%d", i))); err != nil && !errors.Is(err, errdefs.ErrQuota) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	gs, _, err := st.ListGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, g := range gs {
		sum += g.Spec.Requests().MilliCPU
	}
	u, err := m.Usage(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if u.MilliCPU != sum || sum > 10000 || u.Groups != len(gs) {
		t.Fatalf("usage %+v, groups ask %d over %d groups", u, sum, len(gs))
	}
	t.Logf("%d groups, %d mCPU of 10000", len(gs), sum)
}
