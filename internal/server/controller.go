package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/scheduler"
	"github.com/skiffhq/skiff/internal/store"
	"github.com/skiffhq/skiff/internal/tenancy"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// controller runs on the elected leader only: the scheduler loop with its
// serialized plan applier, and the host liveness check. Replicas that are
// not leader wait in the election.
type controller struct {
	store    *store.Store
	log      *slog.Logger
	policy   scheduler.Policy
	replica  string
	kick     chan struct{}
	isLeader func() bool
	leases   *leaseLog
	// ten meters ended groups and reclaims spot capacity (nil: neither).
	ten *tenancy.Manager
	// planner sets warm-pool targets from the demand forecast (pool.go;
	// nil: none).
	planner *planner
	// gate serializes scheduling rounds (exclusive) against
	// pre-placements (shared); led is the view pre-placement places
	// against (preplace.go).
	gate sync.RWMutex
	led  ledger
	// preplaced counts groups placed by pre-placement, not by a round.
	preplaced atomic.Int64
}

func (c *controller) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// run campaigns for leadership and, while leading, runs the loops. It
// returns when ctx ends.
func (c *controller) run(ctx context.Context, leading func(bool)) {
	for ctx.Err() == nil {
		err := c.lead(ctx, leading)
		leading(false)
		if ctx.Err() != nil {
			return
		}
		c.log.Warn("leadership lost; campaigning again", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (c *controller) lead(ctx context.Context, leading func(bool)) error {
	sess, err := concurrency.NewSession(c.store.Client(), concurrency.WithTTL(10), concurrency.WithContext(ctx))
	if err != nil {
		return err
	}
	defer sess.Close()
	if c.leases != nil {
		c.leases.record(sess.Lease())
	}
	el := concurrency.NewElection(sess, c.store.Key("leader"))
	if err := el.Campaign(ctx, c.replica); err != nil {
		return err
	}
	c.log.Info("this replica leads: scheduling", "replica", c.replica)
	leading(true)
	defer c.dropLedger()
	guard := clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-lctx.Done():
		}
	}()
	if c.planner != nil {
		go c.planner.run(lctx, guard) // its own pace: once per half bucket
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if err := c.schedule(lctx, guard); err != nil && lctx.Err() == nil {
			if errors.Is(err, store.ErrGuard) {
				return err
			}
			c.log.Warn("scheduling round failed", "err", err)
		}
		if err := c.checkHosts(lctx, guard); err != nil && lctx.Err() == nil {
			c.log.Warn("host check failed", "err", err)
		}
		if err := c.tenancyRound(lctx, guard); err != nil && lctx.Err() == nil {
			c.log.Warn("metering/spot round failed", "err", err)
		}
		select {
		case <-lctx.Done():
			if ctx.Err() != nil {
				_ = el.Resign(context.Background())
			}
			return lctx.Err()
		case <-tick.C:
		case <-c.kick:
		}
	}
}

// schedule is one round: snapshot, pure placement, serialized apply.
//
// Every round, even one with nothing pending, leaves its view of the hosts
// for pre-placement (preplace.go); gate keeps pre-placements out while the
// round reads and writes.
func (c *controller) schedule(ctx context.Context, guard clientv3.Cmp) error {
	c.gate.Lock()
	defer c.gate.Unlock()
	groups, _, err := c.store.ListGroups(ctx)
	if err != nil {
		return err
	}
	var pending []*api.Group
	for _, g := range groups {
		if g.HostID == "" && !g.Deleting && (g.Status == api.StatusPending || g.Status == api.StatusScheduling || g.Status == api.StatusScheduleFailed) {
			pending = append(pending, g)
		}
	}
	hostRecs, err := c.store.ListHosts(ctx)
	if err != nil {
		return err
	}
	alive, err := c.store.AliveHosts(ctx)
	if err != nil {
		return err
	}
	snap, hostRev := snapshot(hostRecs, alive, groups)
	warm := map[string]map[string]int{}
	if pools, err := c.store.ListPoolStatus(ctx); err == nil {
		for id, p := range pools {
			warm[id] = map[string]int{}
			for _, cl := range p.Classes {
				warm[id][cl.Class] = cl.Size
			}
		}
	}
	// Place below adds this round's decisions to snap's allocation; a
	// decision that then fails to apply stays counted until the next round
	// (safe: it only under-uses a host for a second).
	defer c.setLedger(snap, hostRev, warm, guard)
	if len(pending) == 0 {
		return nil
	}
	reqs := make([]scheduler.Request, len(pending))
	byID := make(map[string]*api.Group, len(pending))
	prefer := cachePreferences(ctx, c.store, pending) // hosts holding each group's image cache (imagecache.go)
	for i, g := range pending {
		r := g.Spec.Requests()
		reqs[i] = scheduler.Request{GroupID: g.ID, MilliCPU: r.MilliCPU, Memory: r.Memory, GPU: r.GPU, Zone: g.Spec.Zone, NodeSelector: g.Spec.NodeSelector}
		reqs[i].PreferHosts = prefer[g.Spec.ImageCacheID]
		byID[g.ID] = g
	}
	decisions := scheduler.Place(snap, reqs, c.policy)
	return c.applyAll(ctx, guard, byID, decisions, hostRev) // schedbatch.go
}

// apply commits one decision if neither the group nor the chosen host
// changed since the snapshot, and only while this replica leads.
func (c *controller) apply(ctx context.Context, guard clientv3.Cmp, g *api.Group, d scheduler.Decision, hostRev map[string]int64) error {
	guards := []clientv3.Cmp{guard}
	if d.HostID != "" {
		guards = append(guards, clientv3.Compare(clientv3.ModRevision(c.store.Key("hosts", d.HostID)), "=", hostRev[d.HostID]))
	}
	now := time.Now().UTC()
	var events []api.Event
	_, err := c.store.UpdateGroup(ctx, g.ID, func(cur *api.Group) error {
		if cur.HostID != "" || cur.Deleting || cur.Revision != g.Revision {
			return store.ErrNoChange // stale decision: the next round sees the new state
		}
		if d.HostID == "" {
			if cur.Status == api.StatusScheduleFailed && cur.Message == d.Reason {
				return store.ErrNoChange
			}
			cur.Status = api.StatusScheduleFailed
			cur.Reason = "Unschedulable"
			cur.Message = d.Reason
			events = append(events, api.Event{GroupID: g.ID, Type: "Warning", Reason: "FailedScheduling", Message: d.Reason, Time: now})
			return nil
		}
		cur.HostID = d.HostID
		cur.Status = api.StatusScheduling
		cur.Reason, cur.Message = "", ""
		cur.ScheduledAt = &now
		events = append(events, api.Event{GroupID: g.ID, Type: "Normal", Reason: "Scheduled", Message: "assigned to host " + d.HostID, HostID: d.HostID, Time: now})
		return nil
	}, guards...)
	if errors.Is(err, store.ErrGuard) {
		// Either leadership is gone or the host changed: find out which.
		if resp, gerr := c.store.Client().Txn(ctx).If(guard).Commit(); gerr == nil && resp.Succeeded {
			return nil // host changed; the decision is stale and dropped
		}
		return err
	}
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	if len(events) > 0 {
		_ = c.store.AppendEvents(ctx, events...)
	}
	return nil
}

// snapshot builds the scheduler's view: capacity from host records,
// readiness from the alive keys, allocation from the groups placed.
func snapshot(recs []*api.Host, alive map[string]bool, groups []*api.Group) ([]*scheduler.Host, map[string]int64) {
	hosts := make([]*scheduler.Host, 0, len(recs))
	byID := map[string]*scheduler.Host{}
	rev := map[string]int64{}
	for _, h := range recs {
		sh := &scheduler.Host{ID: h.ID, Zone: h.Zone, Labels: h.Labels, Ready: alive[h.ID] && h.State == api.HostReady, Capacity: h.Capacity}
		hosts = append(hosts, sh)
		byID[h.ID] = sh
		rev[h.ID] = h.Revision
	}
	for _, g := range groups {
		if g.HostID == "" || g.Status.Terminal() {
			continue
		}
		if sh := byID[g.HostID]; sh != nil {
			r := g.Spec.Requests()
			sh.Allocated.MilliCPU += r.MilliCPU
			sh.Allocated.Memory += r.Memory
			sh.Allocated.GPU += r.GPU
			sh.Allocated.Groups++
		}
	}
	return hosts, rev
}

// checkHosts marks hosts whose agent is gone NotReady, and says so on their
// groups.
func (c *controller) checkHosts(ctx context.Context, guard clientv3.Cmp) error {
	hosts, err := c.store.ListHosts(ctx)
	if err != nil {
		return err
	}
	alive, err := c.store.AliveHosts(ctx)
	if err != nil {
		return err
	}
	for _, h := range hosts {
		if alive[h.ID] || h.State != api.HostReady {
			continue
		}
		c.log.Warn("host stopped heartbeating: NotReady", "host", h.ID, "name", h.Name)
		if _, err := c.store.UpdateHost(ctx, h.ID, func(h *api.Host) error {
			h.State = api.HostNotReady
			return nil
		}); err != nil {
			return err
		}
		groups, _, err := c.store.ListGroups(ctx)
		if err != nil {
			return err
		}
		for _, g := range groups {
			if g.HostID != h.ID || g.Status.Terminal() {
				continue
			}
			_, _ = c.store.UpdateGroup(ctx, g.ID, func(g *api.Group) error {
				g.Reason = "HostNotReady"
				g.Message = fmt.Sprintf("host %s (%s) stopped heartbeating; status as last reported", h.Name, h.ID)
				return nil
			}, guard)
		}
	}
	return nil
}

// cidrAllocator hands each host a /20 (4096 addresses: enough for the 3000+
// groups a host must hold) out of the cluster range.
type cidrAllocator struct {
	store   *store.Store
	cluster netip.Prefix
}

func (a *cidrAllocator) allocate(ctx context.Context) (string, error) {
	n, err := a.store.NextCounter(ctx, "podcidr")
	if err != nil {
		return "", err
	}
	const hostBits = 12 // /20
	slots := int64(1) << (32 - a.cluster.Bits() - hostBits)
	if n > slots {
		return "", fmt.Errorf("cluster pod range %s is exhausted (%d hosts)", a.cluster, slots)
	}
	base := a.cluster.Addr().As4()
	v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	v += uint32(n-1) << hostBits
	addr := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	return netip.PrefixFrom(addr, 32-hostBits).String(), nil
}
