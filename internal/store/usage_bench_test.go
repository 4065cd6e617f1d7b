package store

import (
	"context"
	"fmt"
	"testing"

	"github.com/skiffhq/skiff/api"
)

// BenchmarkDeleteGroup measures one group delete of a charged group (the
// delete releases the charge in the same transaction).
func BenchmarkDeleteGroup(b *testing.B) {
	s := newStore(b)
	ctx := context.Background()
	gs := make([]*api.Group, b.N)
	es := make([]UsageEntry, b.N)
	for i := range gs {
		id := fmt.Sprintf("g-%d", i)
		gs[i] = &api.Group{ID: id, Name: id, AccountID: "acme", Spec: api.GroupSpec{Containers: []api.Container{{Name: "a"}}}}
		es[i] = UsageEntry{MilliCPU: 100, Memory: 1 << 20}
	}
	out, errs := s.CreateGroupsCharged(ctx, gs, es, func(Usage, UsageEntry) error { return nil })
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for _, g := range out {
		if err := s.DeleteGroup(ctx, g); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeleteGroups is BenchmarkDeleteGroup through the batched delete
// a host's teardown report takes (per group).
func BenchmarkDeleteGroups(b *testing.B) {
	s := newStore(b)
	ctx := context.Background()
	gs := make([]*api.Group, b.N)
	es := make([]UsageEntry, b.N)
	for i := range gs {
		id := fmt.Sprintf("g-%d", i)
		gs[i] = &api.Group{ID: id, Name: id, AccountID: "acme", Spec: api.GroupSpec{Containers: []api.Container{{Name: "a"}}}}
		es[i] = UsageEntry{MilliCPU: 100, Memory: 1 << 20}
	}
	out, errs := s.CreateGroupsCharged(ctx, gs, es, func(Usage, UsageEntry) error { return nil })
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for len(out) > 0 {
		n := min(len(out), 50) // about what one status report carries in a teardown
		for _, err := range s.DeleteGroups(ctx, out[:n]) {
			if err != nil {
				b.Fatal(err)
			}
		}
		out = out[n:]
	}
}
