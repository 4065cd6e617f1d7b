package kubelet

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

// createBatcher turns the creates of many pods into few calls of skiff's
// batch API (POST /v1/groups:batch). When a Deployment scales up, hundreds
// of pods arrive at once; one call per pod, each holding a worker until
// skiff answers, would make the skiff round trip (and its store
// transaction) the bottleneck. A worker submits its pod's create and moves
// on; the answer comes back through a callback. A create waits at most
// batchLinger for company, and only while another batch is in flight: a
// lone create on an idle node goes out at once.
type createBatcher struct {
	cl       *client.Client
	calls    chan *createCall
	inflight chan struct{} // one token per batch in flight
}

const (
	batchLinger   = 5 * time.Millisecond
	batchMax      = 100
	batchInflight = 4
	batchQueue    = 4096
)

type createCall struct {
	req  api.CreateGroupRequest
	done func(g *api.Group, created bool, err error)
}

func newCreateBatcher(cl *client.Client) *createBatcher {
	return &createBatcher{cl: cl, calls: make(chan *createCall, batchQueue), inflight: make(chan struct{}, batchInflight)}
}

// submit queues one create; done is called once with its outcome, from
// another goroutine. It blocks only while batchQueue creates wait.
func (b *createBatcher) submit(ctx context.Context, req api.CreateGroupRequest, done func(*api.Group, bool, error)) {
	select {
	case b.calls <- &createCall{req: req, done: done}:
	case <-ctx.Done():
		done(nil, false, ctx.Err())
	}
}

// run gathers creates into batches until ctx is done.
func (b *createBatcher) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		var batch []*createCall
		select {
		case c := <-b.calls:
			batch = append(batch, c)
		case <-ctx.Done():
			b.drain(ctx.Err())
			return
		}
		if len(b.inflight) > 0 {
			batch = b.gather(ctx, batch, time.After(batchLinger))
		} else {
			batch = b.gather(ctx, batch, nil)
		}
		select {
		case b.inflight <- struct{}{}:
		case <-ctx.Done():
			fail(batch, ctx.Err())
			b.drain(ctx.Err())
			return
		}
		batch = b.gather(ctx, batch, nil) // those that came while we waited
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-b.inflight }()
			b.send(ctx, batch)
		}()
	}
}

// gather adds the creates that arrive until linger fires (nil: only those
// already waiting), up to batchMax.
func (b *createBatcher) gather(ctx context.Context, batch []*createCall, linger <-chan time.Time) []*createCall {
	for len(batch) < batchMax {
		if linger == nil {
			select {
			case c := <-b.calls:
				batch = append(batch, c)
				continue
			default:
				return batch
			}
		}
		select {
		case c := <-b.calls:
			batch = append(batch, c)
		case <-linger:
			return batch
		case <-ctx.Done():
			return batch
		}
	}
	return batch
}

// drain fails whatever is still queued.
func (b *createBatcher) drain(err error) {
	for {
		select {
		case c := <-b.calls:
			c.done(nil, false, err)
		default:
			return
		}
	}
}

func (b *createBatcher) send(ctx context.Context, batch []*createCall) {
	if len(batch) == 1 {
		g, created, err := b.cl.CreateGroup(ctx, batch[0].req)
		batch[0].done(g, created, err)
		return
	}
	reqs := make([]api.CreateGroupRequest, len(batch))
	for i, c := range batch {
		reqs[i] = c.req
	}
	resp, err := b.cl.CreateGroups(ctx, reqs)
	if err != nil {
		fail(batch, err)
		return
	}
	for i, c := range batch {
		if i >= len(resp.Items) {
			c.done(nil, false, fmt.Errorf("batch create: no result for item %d", i))
			continue
		}
		it := resp.Items[i]
		switch {
		case it.Error != nil:
			c.done(nil, false, &itemError{it.Error})
		case it.Group == nil:
			c.done(nil, false, fmt.Errorf("batch create: item %d has neither group nor error", i))
		default:
			c.done(it.Group, it.Created, nil)
		}
	}
}

func fail(batch []*createCall, err error) {
	for _, c := range batch {
		c.done(nil, false, err)
	}
}

// itemError is the error one item of a batch met.
type itemError struct{ e *api.Error }

func (e *itemError) Error() string { return "create group: " + e.e.Code + ": " + e.e.Message }
func (e *itemError) Unwrap() error { return e.e }

// invalidCreate reports whether skiff refused a create as invalid (it will
// never succeed as it is), from a single or a batch create.
func invalidCreate(err error) bool {
	if code := client.StatusCode(err); code == 400 || code == 422 {
		return true
	}
	if ie, ok := err.(*itemError); ok {
		return ie.e.Code == "InvalidParameter" || ie.e.Code == "MissingParameter"
	}
	return false
}

// inflightSet remembers the pods whose create is submitted and not yet
// answered, so that a sync meanwhile does not submit it again.
type inflightSet struct {
	mu sync.Mutex
	m  map[string]bool
}

func (s *inflightSet) start(uid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]bool{}
	}
	if s.m[uid] {
		return false
	}
	s.m[uid] = true
	return true
}

func (s *inflightSet) done(uid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, uid)
}

func (s *inflightSet) has(uid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[uid]
}
