package agent

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/skiffhq/skiff/internal/hostapi"
)

// reporter batches status updates to the server: the newest update of each
// group wins, events accumulate, and one request carries a whole batch. It
// holds what could not be sent while the server is away and sends it on the
// next session.
type reporter struct {
	log *slog.Logger

	mu      sync.Mutex
	pending map[string]*hostapi.GroupUpdate
	order   []string
	wake    chan struct{}
}

func newReporter(log *slog.Logger) *reporter {
	return &reporter{log: log, pending: map[string]*hostapi.GroupUpdate{}, wake: make(chan struct{}, 1)}
}

func (r *reporter) report(u hostapi.GroupUpdate) {
	r.mu.Lock()
	if prev, ok := r.pending[u.ID]; ok {
		u.Events = append(prev.Events, u.Events...)
	} else {
		r.order = append(r.order, u.ID)
	}
	r.pending[u.ID] = &u
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *reporter) take() []hostapi.GroupUpdate {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.order) == 0 {
		return nil
	}
	n := min(len(r.order), 500)
	out := make([]hostapi.GroupUpdate, 0, n)
	for _, id := range r.order[:n] {
		out = append(out, *r.pending[id])
		delete(r.pending, id)
	}
	r.order = r.order[n:]
	return out
}

// putBack re-queues a batch that failed, unless newer updates arrived.
func (r *reporter) putBack(batch []hostapi.GroupUpdate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range batch {
		u := batch[i]
		if newer, ok := r.pending[u.ID]; ok {
			newer.Events = append(u.Events, newer.Events...)
			continue
		}
		r.pending[u.ID] = &u
		r.order = append(r.order, u.ID)
	}
}

func (r *reporter) run(ctx context.Context, srv *http.Client) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-time.After(time.Second):
		}
		// Let a burst of updates gather into one request.
		time.Sleep(5 * time.Millisecond)
		for {
			batch := r.take()
			if len(batch) == 0 {
				break
			}
			if err := call(ctx, srv, http.MethodPost, "/agent/v1/status", hostapi.StatusReport{Updates: batch}, nil); err != nil {
				r.putBack(batch)
				if ctx.Err() == nil {
					r.log.Warn("status report failed; will retry", "err", err)
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(500 * time.Millisecond):
				}
				break
			}
		}
	}
}
