package server

import (
	"context"
	"encoding/json"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/scheduler"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// placeChunk is how many placements go into one etcd transaction: each
// costs a compare and a put, plus one compare per distinct host, under
// etcd's default limit of 128 operations.
const placeChunk = 50

// applyAll commits a round's decisions. Placements go in chunks, one
// transaction each, guarded like apply's single writes (leadership, the
// group's revision as the round read it, the host record's revision) —
// one round trip and one disk sync per chunk instead of a read, a write
// and an event write per group. A chunk whose transaction fails is
// applied decision by decision, which drops exactly the stale ones; an
// unplaceable group always goes that way.
func (c *controller) applyAll(ctx context.Context, guard clientv3.Cmp, byID map[string]*api.Group, decisions []scheduler.Decision, hostRev map[string]int64) error {
	var chunk []scheduler.Decision
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		defer func() { chunk = chunk[:0] }()
		ok, err := c.applyChunk(ctx, guard, byID, chunk, hostRev)
		if err != nil || ok {
			return err
		}
		for _, d := range chunk {
			if err := c.apply(ctx, guard, byID[d.GroupID], d, hostRev); err != nil {
				return err
			}
		}
		return nil
	}
	for _, d := range decisions {
		g := byID[d.GroupID]
		if g == nil {
			continue // not a group this round asked about
		}
		if d.HostID == "" || g.HostID != "" || g.Deleting {
			if err := c.apply(ctx, guard, g, d, hostRev); err != nil {
				return err
			}
			continue
		}
		chunk = append(chunk, d)
		if len(chunk) == placeChunk {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// applyChunk writes placements in one transaction; ok is false when a
// guard failed and nothing was written.
func (c *controller) applyChunk(ctx context.Context, guard clientv3.Cmp, byID map[string]*api.Group, ds []scheduler.Decision, hostRev map[string]int64) (ok bool, err error) {
	now := time.Now().UTC()
	cmps := []clientv3.Cmp{guard}
	hosts := map[string]bool{}
	var puts []clientv3.Op
	var events []api.Event
	for _, d := range ds {
		g := *byID[d.GroupID] // a copy: the round's snapshot stays as read
		key := c.store.Key("groups", g.ID)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", g.Revision))
		if !hosts[d.HostID] {
			hosts[d.HostID] = true
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(c.store.Key("hosts", d.HostID)), "=", hostRev[d.HostID]))
		}
		g.HostID = d.HostID
		g.Status = api.StatusScheduling
		g.Reason, g.Message = "", ""
		g.ScheduledAt = &now
		g.UpdatedAt = now
		g.Revision = 0
		b, err := json.Marshal(&g)
		if err != nil {
			return false, err
		}
		puts = append(puts, clientv3.OpPut(key, string(b)))
		events = append(events, api.Event{GroupID: g.ID, Type: "Normal", Reason: "Scheduled", Message: "assigned to host " + d.HostID, HostID: d.HostID, Time: now})
	}
	resp, err := c.store.Client().Txn(ctx).If(cmps...).Then(puts...).Commit()
	if err != nil {
		return false, err
	}
	if !resp.Succeeded {
		return false, nil
	}
	_ = c.store.AppendEvents(ctx, events...)
	return true, nil
}
