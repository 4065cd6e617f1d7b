package server

import (
	"context"
	"sync"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/scheduler"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Pre-placement: the groups of a burst are placed as soon as they are
// stored, without waiting for a scheduling round (which lists every group
// and every host). The leader keeps the last round's view of the hosts in
// memory — capacity, readiness, allocation with the round's own decisions
// added, and each host's warm pool — and places new groups against it
// with the same pure scheduler, preferring hosts that hold prepared
// sandboxes of the group's shape class. The decisions are committed by the
// round's own applier (applyAll): chunked transactions guarded by the
// leadership, each group's revision and each host record's revision.
//
// Why this is capacity-safe: only the leader places, and its placements
// are serialized against its view: a round holds gate exclusively from
// its snapshot to its last write, and a pre-placement holds it shared from
// its decision to its write, so a round never reads the groups while a
// pre-placement's decisions are decided but not yet stored. Between
// rounds, pre-placements add to the view what they allocate; what is
// freed shows up only at the next round, which errs on the safe side. A
// host that changed (NotReady, new capacity) fails its revision guard; a
// replica that lost the lead fails the leadership guard; either way the
// decision is dropped and the group waits, Pending, for the next round —
// the normal path, as it also is for image-cache groups, groups nothing
// fits, and while a round runs (pre-placement never waits for one).
type ledger struct {
	mu      sync.Mutex
	hosts   []*scheduler.Host
	hostRev map[string]int64
	warm    map[string]map[string]int // host → shape class → prepared sandboxes
	guard   clientv3.Cmp
	at      time.Time
}

// ledgerTTL is how long a round's view serves pre-placement. Rounds run
// every second on the leader, so a fresh one is normally there.
const ledgerTTL = 3 * time.Second

// setLedger installs a round's view (hosts as Place left them: allocation
// includes the round's decisions). Called with gate held exclusively.
func (c *controller) setLedger(hosts []*scheduler.Host, hostRev map[string]int64, warm map[string]map[string]int, guard clientv3.Cmp) {
	c.led.mu.Lock()
	c.led.hosts, c.led.hostRev, c.led.warm, c.led.guard, c.led.at = hosts, hostRev, warm, guard, time.Now()
	c.led.mu.Unlock()
}

// dropLedger forgets the view (leadership ended).
func (c *controller) dropLedger() {
	c.led.mu.Lock()
	c.led.hosts, c.led.at = nil, time.Time{}
	c.led.mu.Unlock()
}

// preplace places freshly created groups against the leader's view and
// commits the placements; it returns how many it placed (0 on a replica
// that does not lead, or while a round runs).
func (c *controller) preplace(ctx context.Context, gs []*api.Group) int {
	if !c.gate.TryRLock() {
		return 0 // a round is running: it or the next one places them
	}
	defer c.gate.RUnlock()
	c.led.mu.Lock()
	if c.led.hosts == nil || time.Since(c.led.at) > ledgerTTL {
		c.led.mu.Unlock()
		return 0
	}
	guard, hostRev := c.led.guard, c.led.hostRev
	var reqs []scheduler.Request
	byID := map[string]*api.Group{}
	for _, g := range gs {
		if g == nil || g.HostID != "" || g.Deleting || g.Status != api.StatusPending || g.Spec.ImageCacheID != "" {
			continue // image-cache groups need the round's cache preferences
		}
		r := g.Spec.Requests()
		req := scheduler.Request{GroupID: g.ID, MilliCPU: r.MilliCPU, Memory: r.Memory, GPU: r.GPU, Zone: g.Spec.Zone, NodeSelector: g.Spec.NodeSelector}
		if class := api.ShapeClassOf(r); class != "" {
			for host, classes := range c.led.warm {
				if classes[class] > 0 {
					req.PreferHosts = append(req.PreferHosts, host)
				}
			}
		}
		reqs = append(reqs, req)
		byID[g.ID] = g
	}
	decisions := scheduler.Place(c.led.hosts, reqs, c.policy) // adds to the view what it allocates
	var placed []scheduler.Decision
	for i, d := range decisions {
		if d.HostID == "" {
			continue // nothing fits: the round says why (ScheduleFailed)
		}
		placed = append(placed, d)
		if class := api.ShapeClassOf(byID[reqs[i].GroupID].Spec.Requests()); class != "" && c.led.warm[d.HostID][class] > 0 {
			c.led.warm[d.HostID][class]--
		}
	}
	c.led.mu.Unlock()
	if len(placed) == 0 {
		return 0
	}
	if err := c.applyAll(ctx, guard, byID, placed, hostRev); err != nil {
		c.log.Debug("pre-placement not applied; the scheduler round places these groups", "err", err)
		return 0
	}
	c.preplaced.Add(int64(len(placed)))
	return len(placed)
}

// hostView copies the leader's current view of the hosts, for the pool
// planner (which then need not list every group itself).
func (c *controller) hostView() ([]scheduler.Host, bool) {
	c.led.mu.Lock()
	defer c.led.mu.Unlock()
	if c.led.hosts == nil || time.Since(c.led.at) > ledgerTTL {
		return nil, false
	}
	out := make([]scheduler.Host, len(c.led.hosts))
	for i, h := range c.led.hosts {
		out[i] = *h
	}
	return out, true
}
