package agent

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/sandbox"
)

// fakePool is a sandbox.Pool that counts, and remembers the most it ever
// held per class.
type fakePool struct {
	mu       sync.Mutex
	size     map[string]int
	peak     map[string]int
	prepares int
	delay    time.Duration
}

func newFakePool() *fakePool { return &fakePool{size: map[string]int{}, peak: map[string]int{}} }

func (f *fakePool) PrepareSandbox(ctx context.Context, c sandbox.PoolClass) error {
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.size[c.Name]++
	f.prepares++
	f.peak[c.Name] = max(f.peak[c.Name], f.size[c.Name])
	return nil
}

func (f *fakePool) DrainPool(ctx context.Context, class string, n int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	classes := []string{class}
	if class == "" { // every class
		classes = nil
		for c := range f.size {
			classes = append(classes, c)
		}
	}
	total := 0
	for _, c := range classes {
		k := f.size[c]
		if n >= 0 {
			k = min(n-total, k)
		}
		f.size[c] -= k
		total += k
	}
	return total, nil
}

func (f *fakePool) PoolStats() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for k, v := range f.size {
		if v > 0 {
			out[k] = v
		}
	}
	return out
}

// take is what CreateSandbox with a PoolClass does to the pool.
func (f *fakePool) take(class string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.size[class] == 0 {
		return false
	}
	f.size[class]--
	return true
}

func (f *fakePool) get(class string) (size, peak, prepares int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.size[class], f.peak[class], f.prepares
}

func testPoolManager(p sandbox.Pool, fixed api.PoolTargets) *poolManager {
	m := newPoolManager(p, fixed, slog.New(slog.NewTextHandler(io.Discard, nil)))
	m.quiet = 20 * time.Millisecond
	return m
}

func poolWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPoolRefillsAndShrinks(t *testing.T) {
	p := newFakePool()
	m := testPoolManager(p, api.PoolTargets{"c0.25": 2})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.run(ctx); close(done) }()

	// The agent's own floor fills before the server said anything.
	poolWait(t, "fixed target", func() bool { s, _, _ := p.get("c0.25"); return s == 2 })
	// The server asks for more of it and for another class.
	m.setServerTargets(api.PoolTargets{"c0.25": 5, "c1": 3, "bogus": 7})
	poolWait(t, "server targets", func() bool {
		a, _, _ := p.get("c0.25")
		b, _, _ := p.get("c1")
		return a == 5 && b == 3
	})
	// Shrink: down to the fixed floor for c0.25, to nothing for c1.
	m.setServerTargets(api.PoolTargets{})
	poolWait(t, "shrink", func() bool {
		a, _, _ := p.get("c0.25")
		b, _, _ := p.get("c1")
		return a == 2 && b == 0
	})
	time.Sleep(50 * time.Millisecond)
	if _, peak, _ := p.get("c0.25"); peak > 5 {
		t.Fatalf("pool held %d of c0.25, more than the target 5", peak)
	}
	if _, peak, _ := p.get("c1"); peak > 3 {
		t.Fatalf("pool held %d of c1, more than the target 3", peak)
	}
	if _, ok := api.PoolTargets(p.PoolStats())["bogus"]; ok {
		t.Fatal("an unknown class was prepared")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("run did not stop on context cancel")
	}
	// Stopping leaves the pool (it is durable); nothing more is prepared.
	_, _, before := p.get("")
	time.Sleep(50 * time.Millisecond)
	if _, _, after := p.get(""); after != before {
		t.Fatal("prepared after the context ended")
	}
	if s, _, _ := p.get("c0.25"); s != 2 {
		t.Fatalf("stopping the manager changed the pool: %d left", s)
	}
}

func TestPoolNoDrainBeforeServerTargets(t *testing.T) {
	p := newFakePool()
	p.size["c1"] = 4 // found from the last run
	m := testPoolManager(p, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.run(ctx)
	time.Sleep(100 * time.Millisecond)
	if s, _, _ := p.get("c1"); s != 4 {
		t.Fatalf("drained to %d before the server's targets were known", s)
	}
	m.setServerTargets(api.PoolTargets{"c1": 1})
	poolWait(t, "drain to 1", func() bool { s, _, _ := p.get("c1"); return s == 1 })
}

func TestPoolYieldsToCreatesAndCounts(t *testing.T) {
	p := newFakePool()
	m := testPoolManager(p, nil)
	m.quiet = 100 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.run(ctx)

	// A create in flight: no refill while it runs.
	class, done := m.beginCreate(api.Resources{MilliCPU: 250, Memory: 256 << 20})
	if class != "c0.25" {
		t.Fatalf("class %q, want c0.25", class)
	}
	m.setServerTargets(api.PoolTargets{"c0.25": 3})
	time.Sleep(150 * time.Millisecond)
	if _, _, n := p.get(""); n != 0 {
		t.Fatalf("%d prepares while a create was in flight", n)
	}
	done(false) // a miss
	poolWait(t, "refill after the create", func() bool { s, _, _ := p.get("c0.25"); return s == 3 })

	// A create that takes from the pool: a hit; the pool refills.
	_, done = m.beginCreate(api.Resources{MilliCPU: 200, Memory: 100 << 20})
	done(p.take("c0.25"))
	// A group too large for any class counts nothing.
	big, done := m.beginCreate(api.Resources{MilliCPU: 64000, Memory: 1 << 40})
	if big != "" {
		t.Fatalf("class %q for a huge group", big)
	}
	done(false)
	poolWait(t, "refill after the hit", func() bool { s, _, _ := p.get("c0.25"); return s == 3 })

	var st api.PoolClassStatus
	for _, c := range m.status() {
		if c.Class == "c0.25" {
			st = c
		}
	}
	if st.Hits != 1 || st.Misses != 1 || st.Size != 3 || st.Target != 3 || st.Prepared != 4 {
		t.Fatalf("status %+v, want 1 hit, 1 miss, size 3, target 3, 4 prepared", st)
	}
	if len(m.status()) != 1 {
		t.Fatalf("status has classes besides c0.25: %+v", m.status())
	}
	reg := prometheus.NewRegistry()
	m.register(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			switch {
			case mt.GetCounter() != nil:
				got[mf.GetName()] = mt.GetCounter().GetValue()
			case mt.GetGauge() != nil:
				got[mf.GetName()] = mt.GetGauge().GetValue()
			}
		}
	}
	for name, want := range map[string]float64{"skiff_pool_hits_total": 1, "skiff_pool_misses_total": 1, "skiff_pool_size": 3, "skiff_pool_target": 3, "skiff_pool_prepared_total": 4} {
		if got[name] != want {
			t.Errorf("metric %s = %v, want %v", name, got[name], want)
		}
	}
}

func TestPoolClassOf(t *testing.T) {
	for _, c := range []struct {
		r    api.Resources
		want string
	}{
		{api.Resources{MilliCPU: 250, Memory: 256 << 20}, "c0.25"},
		{api.Resources{MilliCPU: 250, Memory: 1 << 30}, "c0.5"},
		{api.Resources{MilliCPU: 1500, Memory: 1 << 30}, "c2"},
		{api.Resources{MilliCPU: 8000, Memory: 16 << 30}, "c8"},
		{api.Resources{MilliCPU: 8001}, ""},
	} {
		if got := api.ShapeClassOf(c.r); got != c.want {
			t.Errorf("ShapeClassOf(%+v) = %q, want %q", c.r, got, c.want)
		}
	}
}

func TestPoolDrainOnStop(t *testing.T) {
	p := newFakePool()
	m := testPoolManager(p, api.PoolTargets{"c1": 2})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { defer close(m.done); m.run(ctx) }()
	poolWait(t, "fill", func() bool { s, _, _ := p.get("c1"); return s == 2 })
	cancel()
	m.drainOnStop()
	if len(p.PoolStats()) != 0 {
		t.Fatalf("pool after a clean stop: %v", p.PoolStats())
	}
}
