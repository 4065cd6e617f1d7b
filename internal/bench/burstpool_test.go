package bench

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
)

// scriptedHosts answers GET /v1/hosts from a list of pools, one per call,
// repeating the last.
type scriptedHosts struct {
	mu    sync.Mutex
	pools []*api.HostPool
	calls int
}

func (s *scriptedHosts) Hosts(context.Context) ([]api.Host, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pools[min(s.calls, len(s.pools)-1)]
	s.calls++
	return []api.Host{{ID: "h1", Pool: p}}, nil
}

func pool(size, target int, hits, misses int64) *api.HostPool {
	return &api.HostPool{UpdatedAt: time.Now(), Classes: []api.PoolClassStatus{{Class: "c0.25", Size: size, Target: target, Hits: hits, Misses: misses}}}
}

func TestPreparePool(t *testing.T) {
	cases := []struct {
		name  string
		pool  string
		pools []*api.HostPool
		err   string // "" for none
		calls int    // at least
	}{
		{"on, no pool reported", "on", []*api.HostPool{nil}, "no host reports a warm pool", 1},
		{"on, no target", "on", []*api.HostPool{pool(0, 0, 0, 0)}, "--pool-size c0.25=10", 1},
		{"on, filling", "on", []*api.HostPool{pool(2, 10, 0, 0), pool(6, 10, 0, 0), pool(10, 10, 0, 0)}, "", 3},
		{"on, target below count", "on", []*api.HostPool{pool(4, 4, 0, 0)}, "", 1},
		{"on, never fills", "on", []*api.HostPool{pool(1, 10, 0, 0)}, "holds 1 of 10", 1},
		{"off, pool held", "off", []*api.HostPool{pool(3, 3, 0, 0)}, "--pool-max-per-host 0", 1},
		{"off, draining", "off", []*api.HostPool{pool(3, 0, 0, 0), pool(0, 0, 0, 0)}, "", 2},
		{"off, no pool at all", "off", []*api.HostPool{nil}, "", 1},
		{"server's", "", []*api.HostPool{pool(5, 5, 0, 0)}, "", 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := &scriptedHosts{pools: c.pools}
			cfg := BurstConfig{Count: 10, Pool: c.pool, PoolWait: 1200 * time.Millisecond}
			_, err := preparePool(context.Background(), h, &cfg, "c0.25")
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("error %v", err)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err) || !errors.Is(err, ErrPoolSetup)):
				t.Fatalf("error %v, want one with %q", err, c.err)
			}
			if h.calls < c.calls {
				t.Errorf("%d reads, want at least %d", h.calls, c.calls)
			}
		})
	}
}

func TestCountPoolHits(t *testing.T) {
	before := sumPools([]api.Host{{Pool: pool(10, 10, 5, 1)}}, "c0.25", time.Now())
	since := time.Now()
	time.Sleep(time.Millisecond)
	h := &scriptedHosts{pools: []*api.HostPool{pool(10, 10, 8, 1), pool(4, 10, 11, 2)}}
	hits, misses, err := countPoolHits(context.Background(), h, before, "c0.25", 7, since)
	if err != nil || hits != 6 || misses != 1 {
		t.Errorf("hits %d misses %d err %v, want 6 1", hits, misses, err)
	}
	if burstClass(BurstConfig{CPU: 10, Memory: 8 << 20}) != "c0.25" || burstClass(BurstConfig{CPU: 64000, Memory: 1 << 40}) != "" {
		t.Error("burstClass")
	}
}
