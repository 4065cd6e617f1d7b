package tenancy

import (
	"context"
	"fmt"
	"testing"

	"github.com/skiffhq/skiff/api"
)

// BenchmarkCreateChunk measures one batched create of 32 groups (one store
// chunk) into an account that already holds 100 or 3000 groups: the cost
// of charging a chunk must not grow with what the account holds.
func BenchmarkCreateChunk(b *testing.B) {
	for _, existing := range []int{100, 3000} {
		b.Run(fmt.Sprintf("existing=%d", existing), func(b *testing.B) {
			st := newStore(b)
			ctx := context.Background()
			m := New(st, Config{})
			if _, err := m.CreateAccount(ctx, api.CreateAccountRequest{Name: "acme"}); err != nil {
				b.Fatal(err)
			}
			mk := func(prefix string, i int) *api.Group {
				id := fmt.Sprintf("g-%s-%d", prefix, i)
				return &api.Group{ID: id, Name: id, AccountID: "acme", Status: api.StatusPending,
					Spec: api.GroupSpec{CPU: 250, Memory: 1 << 28, Containers: []api.Container{{Name: "a"}}}}
			}
			for i := 0; i < existing; i += 256 {
				var gs []*api.Group
				for k := i; k < min(i+256, existing); k++ {
					gs = append(gs, mk("old", k))
				}
				if _, errs := m.CreateGroups(ctx, gs); firstErr(errs) != nil {
					b.Fatal(firstErr(errs))
				}
			}
			b.ResetTimer()
			for n := 0; n < b.N; n++ {
				gs := make([]*api.Group, 32)
				for k := range gs {
					gs[k] = mk(fmt.Sprintf("new%d", n), k)
				}
				out, errs := m.CreateGroups(ctx, gs)
				if err := firstErr(errs); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				for _, g := range out { // back to `existing` groups for the next round
					if err := st.DeleteGroup(ctx, g); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
			}
			b.StopTimer()
			// What each chunk reads and rewrites besides the groups
			// themselves: the account's usage record (before) or counters.
			var size int
			for _, k := range []string{"usage", "counters"} {
				resp, err := st.Client().Get(ctx, st.Key(k, "acme"))
				if err != nil {
					b.Fatal(err)
				}
				for _, kv := range resp.Kvs {
					size += len(kv.Value)
				}
			}
			b.ReportMetric(float64(size), "usage-bytes/op")
		})
	}
}

func firstErr(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
