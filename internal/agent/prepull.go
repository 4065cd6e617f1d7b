package agent

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skiffhq/skiff/internal/image"
)

// prepuller keeps the images of the groups the control plane expects on
// this host (its pool report's reply) present, so that a predicted create
// finds its rootfs unpacked as well as its sandbox prepared. It pulls one
// image at a time, only while no create is in flight (like the pool's
// refill), with the agent's own registry settings; an image that fails is
// not tried again for a while. Pre-pulled images are ordinary unused
// images: the image GC may prune them under pressure.
type prepuller struct {
	images *image.Store
	idle   func() time.Duration // time until creates have been quiet
	log    *slog.Logger
	retry  time.Duration

	mu     sync.Mutex
	want   []string
	failed map[string]time.Time
	wake   chan struct{}

	pulls *prometheus.CounterVec
}

func newPrepuller(images *image.Store, idle func() time.Duration, log *slog.Logger) *prepuller {
	return &prepuller{images: images, idle: idle, log: log, retry: 10 * time.Minute,
		failed: map[string]time.Time{}, wake: make(chan struct{}, 1),
		pulls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "skiff_pool_prepulls_total",
			Help: "Images of predicted groups pulled ahead of demand, by result (pulled, failed)."}, []string{"result"})}
}

// set replaces the wanted images (most expected first).
func (p *prepuller) set(images []string) {
	p.mu.Lock()
	changed := !slices.Equal(p.want, images)
	p.want = slices.Clone(images)
	p.mu.Unlock()
	if changed {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// next returns the first wanted image that is not on the host and is not
// backing off, or "".
func (p *prepuller) next(ctx context.Context) string {
	p.mu.Lock()
	want := slices.Clone(p.want)
	p.mu.Unlock()
	for _, ref := range want {
		if _, err := p.images.Resolve(ctx, ref); !errors.Is(err, image.ErrNotFound) {
			continue // present (or unusable as a reference: nothing to pull)
		}
		p.mu.Lock()
		until, backing := p.failed[ref]
		p.mu.Unlock()
		if backing && time.Now().Before(until) {
			continue
		}
		return ref
	}
	return ""
}

func (p *prepuller) run(ctx context.Context) {
	for {
		wait := 30 * time.Second // also catches images pruned meanwhile
		if d := p.idle(); d > 0 {
			wait = d
		} else if ref := p.next(ctx); ref != "" {
			p.pull(ctx, ref)
			wait = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		case <-time.After(wait):
		}
	}
}

func (p *prepuller) pull(ctx context.Context, ref string) {
	pctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	res, err := p.images.Pull(pctx, ref, image.PullOptions{})
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		p.mu.Lock()
		p.failed[ref] = time.Now().Add(p.retry)
		p.mu.Unlock()
		p.pulls.WithLabelValues("failed").Inc()
		p.log.Info("could not pull a predicted image ahead of demand; its groups will pull it themselves", "image", ref, "err", pullMessage(err))
		return
	}
	p.mu.Lock()
	delete(p.failed, ref)
	p.mu.Unlock()
	p.pulls.WithLabelValues("pulled").Inc()
	p.log.Info("pulled a predicted image ahead of demand", "image", ref, "digest", res.Digest, "took", res.Duration)
}
