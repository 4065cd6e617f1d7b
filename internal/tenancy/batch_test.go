package tenancy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
)

// Batches racing each other and single creates never over-admit a quota:
// each batch sums the record once and adds what it admits.
func TestBatchCreateQuota(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	m := New(st, Config{})
	if _, err := m.CreateAccount(ctx, api.CreateAccountRequest{Name: "acme", Quota: api.Quota{MilliCPU: 50000, Memory: 1 << 40}}); err != nil {
		t.Fatal(err)
	}
	mk := func(b, i int) *api.Group {
		id := fmt.Sprintf("g-%d-%d", b, i)
		return &api.Group{ID: id, Name: id, AccountID: "acme", Status: api.StatusPending,
			Spec: api.GroupSpec{CPU: 1000, Memory: 1 << 20, Containers: []api.Container{{Name: "a"}}}}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted, refused := 0, 0
	count := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil:
			admitted++
		case errors.Is(err, errdefs.ErrQuota):
			refused++
		default:
			t.Errorf("create: %v", err)
		}
	}
	for b := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var gs []*api.Group
			for i := range 40 { // more than one chunk each
				gs = append(gs, mk(b, i))
			}
			_, errs := m.CreateGroups(ctx, gs)
			for _, err := range errs {
				count(err)
			}
		}()
	}
	for i := range 5 {
		wg.Add(1)
		go func() { defer wg.Done(); _, err := m.CreateGroup(ctx, mk(9, i)); count(err) }()
	}
	wg.Wait()
	if admitted != 50 || refused != 75 {
		t.Fatalf("admitted %d refused %d, want 50 and 75", admitted, refused)
	}
	u, err := m.Usage(ctx, "acme")
	if err != nil || u.MilliCPU != 50000 || u.Groups != 50 {
		t.Fatalf("usage %+v %v", u, err)
	}
}
