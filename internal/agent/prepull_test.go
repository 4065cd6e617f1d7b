package agent

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/skiffhq/skiff/internal/image/registrytest"
)

// The images of predicted groups arrive ahead of demand, one at a time and
// only while no create is in flight; one that fails backs off.
func TestPrepull(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	reg.Push(t, "predicted/bb:1", registrytest.Busybox(t))
	a := registryAgent(t, reg.Host)
	var busy atomic.Bool
	busy.Store(true)
	idle := func() time.Duration {
		if busy.Load() {
			return 20 * time.Millisecond
		}
		return 0
	}
	p := newPrepuller(a.images, idle, a.log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); p.run(ctx) }()
	defer func() { cancel(); <-done }()

	good, bad := reg.Ref("predicted/bb:1"), reg.Ref("predicted/missing:1")
	mark := reg.Mark()
	p.set([]string{bad, good})
	time.Sleep(200 * time.Millisecond)
	if n := counter(p.pulls.WithLabelValues("pulled")) + counter(p.pulls.WithLabelValues("failed")); n != 0 {
		t.Fatalf("%v pulls while creates were in flight", n)
	}
	if reqs := reg.Since(mark); len(reqs) != 0 {
		t.Fatalf("registry saw %d requests while creates were in flight", len(reqs))
	}
	busy.Store(false)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := a.images.Resolve(ctx, good); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the predicted image was not pulled ahead of demand")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if f := counter(p.pulls.WithLabelValues("failed")); f != 1 {
		t.Errorf("failed pulls = %v, want 1 (the missing image, tried once)", f)
	}
	// The failed one backs off: another wake does not pull it again.
	p.set([]string{good, bad})
	time.Sleep(300 * time.Millisecond)
	if f := counter(p.pulls.WithLabelValues("failed")); f != 1 {
		t.Errorf("failed pulls = %v after a wake, want still 1 (backing off)", f)
	}
	if n := counter(p.pulls.WithLabelValues("pulled")); n != 1 {
		t.Errorf("pulled = %v, want 1 (a present image is not pulled again)", n)
	}
}

func counter(c interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil || m.Counter == nil {
		return -1
	}
	return m.Counter.GetValue()
}
