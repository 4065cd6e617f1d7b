package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
)

func chargedGroup(i int) *api.Group {
	id := fmt.Sprintf("g-%d", i)
	return &api.Group{ID: id, Name: id, AccountID: "acme", Spec: api.GroupSpec{Containers: []api.Container{{Name: "a"}}}}
}

func admitAll(Usage, UsageEntry) error { return nil }

// checkUsage asserts the counters and that they equal the sum of the charges.
func checkUsage(t *testing.T, s *Store, want Usage) {
	t.Helper()
	ctx := context.Background()
	u, err := s.GetUsage(ctx, "acme")
	if err != nil || u != want {
		t.Fatalf("usage %+v %v, want %+v", u, err, want)
	}
	cs, err := s.ListCharges(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	var sum Usage
	for _, e := range cs {
		sum = sum.Add(e, 1)
	}
	if sum != want {
		t.Fatalf("charges sum to %+v, counters say %+v", sum, want)
	}
}

// Charges follow the groups: created with them, moved by a charged
// update (with the interval it closes), released by the delete.
func TestUsageCountersFollowGroups(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	e := UsageEntry{MilliCPU: 500, Memory: 1 << 20}
	var gs []*api.Group
	for i := range 40 {
		gs = append(gs, chargedGroup(i))
	}
	es := make([]UsageEntry, len(gs))
	for i := range es {
		es[i] = e
	}
	out, errs := s.CreateGroupsCharged(ctx, gs[:39], es[:39], admitAll)
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CreateGroupCharged(ctx, gs[39], e, admitAll); err != nil {
		t.Fatal(err)
	}
	checkUsage(t, s, Usage{MilliCPU: 20000, Memory: 40 << 20, Groups: 40})

	start := time.Now().Add(-time.Minute).UTC()
	closeE := &LedgerEntry{AccountID: "acme", GroupID: out[0].ID, MilliCPU: 500, Memory: 1 << 20, Start: start, End: time.Now().UTC()}
	bigger := UsageEntry{MilliCPU: 2000, Memory: 4 << 20}
	if _, err := s.UpdateGroupCharged(ctx, out[0].ID, func(g *api.Group) (*ChargeChange, error) {
		return &ChargeChange{Entry: bigger, Close: closeE}, nil
	}, func(u Usage, old, new UsageEntry) error {
		if old != e || new != bigger || u.Groups != 40 {
			t.Errorf("admit saw %+v %+v %+v", u, old, new)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	checkUsage(t, s, Usage{MilliCPU: 21500, Memory: 43 << 20, Groups: 40})
	if ok, _ := s.IntervalClosed(ctx, "acme", out[0].ID, start); !ok {
		t.Fatal("the update did not close the old interval")
	}
	for _, g := range out[:10] {
		cur, _ := s.GetGroup(ctx, g.ID)
		if err := s.DeleteGroup(ctx, cur); err != nil {
			t.Fatal(err)
		}
	}
	checkUsage(t, s, Usage{MilliCPU: 15000, Memory: 30 << 20, Groups: 30})
	// Deleting again (a retry) releases nothing twice.
	if err := s.DeleteGroup(ctx, &api.Group{ID: out[1].ID, Name: out[1].Name, AccountID: "acme"}); err != nil {
		t.Fatal(err)
	}
	checkUsage(t, s, Usage{MilliCPU: 15000, Memory: 30 << 20, Groups: 30})
}

// A store written before counters existed (one usage record listing every
// group, deleted ones included) converts on first use.
func TestUsageMigratesLegacyRecord(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	legacy := legacyUsage{Groups: map[string]UsageEntry{}}
	for i := range 5 {
		g := chargedGroup(i)
		legacy.Groups[g.ID] = UsageEntry{MilliCPU: 1000, Memory: 1 << 30}
		if i < 3 { // the other two were deleted
			if _, err := s.CreateGroup(ctx, g); err != nil {
				t.Fatal(err)
			}
		}
	}
	b, _ := json.Marshal(legacy)
	if _, err := s.cli.Put(ctx, s.Key("usage", "acme"), string(b)); err != nil {
		t.Fatal(err)
	}
	checkUsage(t, s, Usage{MilliCPU: 3000, Memory: 3 << 30, Groups: 3})
	g, _ := s.GetGroup(ctx, "g-0")
	if err := s.DeleteGroup(ctx, g); err != nil {
		t.Fatal(err)
	}
	checkUsage(t, s, Usage{MilliCPU: 2000, Memory: 2 << 30, Groups: 2})
	if resp, _ := s.cli.Get(ctx, s.Key("usage", "acme")); len(resp.Kvs) != 0 {
		t.Fatal("legacy record left behind")
	}
}

// A batched delete releases every charge in one transaction per chunk; a
// group that moved since it was read fails alone with ErrConflict.
func TestDeleteGroupsReleasesCharges(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	var gs []*api.Group
	es := make([]UsageEntry, 70)
	for i := range 70 {
		gs = append(gs, chargedGroup(i))
		es[i] = UsageEntry{MilliCPU: 100, Memory: 1 << 20}
	}
	out, errs := s.CreateGroupsCharged(ctx, gs, es, admitAll)
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	moved, err := s.UpdateGroup(ctx, out[5].ID, func(g *api.Group) error { g.Status = api.StatusRunning; return nil })
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.GetGroups(ctx, []string{out[0].ID, "g-none", out[1].ID})
	if err != nil || len(got) != 2 {
		t.Fatalf("GetGroups: %v %d", err, len(got))
	}
	derrs := s.DeleteGroups(ctx, out[:60]) // out[5] is stale
	for i, err := range derrs {
		if (i == 5) != errors.Is(err, ErrConflict) {
			t.Fatalf("group %d: %v", i, err)
		}
	}
	checkUsage(t, s, Usage{MilliCPU: 1100, Memory: 11 << 20, Groups: 11})
	if err := s.DeleteGroup(ctx, moved); err != nil {
		t.Fatal(err)
	}
	checkUsage(t, s, Usage{MilliCPU: 1000, Memory: 10 << 20, Groups: 10})
	if n, _, _ := s.ListGroups(ctx); len(n) != 10 {
		t.Fatalf("%d groups left", len(n))
	}
}
