package server

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/hostapi"
	"github.com/skiffhq/skiff/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// statusChunk is how many group updates go into one etcd transaction;
// etcd refuses transactions of more than 128 operations by default.
const statusChunk = 100

// applyUpdates writes a host's status updates: per chunk, one read of all
// its groups and one transaction that writes them all, each guarded by
// its record's revision — two round trips and one disk sync for a hundred
// groups, where one UpdateGroup each costs two round trips and a sync
// apiece. A chunk whose transaction loses a race (some group changed under
// it) is written again group by group, with UpdateGroup's retries.
func (h *Hub) applyUpdates(ctx context.Context, hostID string, ups []hostapi.GroupUpdate) error {
	for len(ups) > 0 {
		n := min(len(ups), statusChunk)
		if err := h.applyChunk(ctx, hostID, ups[:n]); err != nil {
			return err
		}
		ups = ups[n:]
	}
	return nil
}

func (h *Hub) applyChunk(ctx context.Context, hostID string, ups []hostapi.GroupUpdate) error {
	cli := h.store.Client()
	gets := make([]clientv3.Op, len(ups))
	seen := make(map[string]bool, len(ups))
	for i, u := range ups {
		if seen[u.ID] { // etcd refuses a key twice in one transaction
			return h.applyEach(ctx, hostID, ups)
		}
		seen[u.ID] = true
		gets[i] = clientv3.OpGet(h.store.Key("groups", u.ID))
	}
	resp, err := cli.Txn(ctx).Then(gets...).Commit()
	if err != nil {
		return err
	}
	var cmps []clientv3.Cmp
	var puts []clientv3.Op
	now := time.Now().UTC()
	for i := range ups {
		kvs := resp.Responses[i].GetResponseRange().Kvs
		if len(kvs) == 0 {
			continue // deleted meanwhile
		}
		var g api.Group
		if err := json.Unmarshal(kvs[0].Value, &g); err != nil {
			return err
		}
		if g.HostID != hostID {
			continue // stale: the group moved or was never here
		}
		u := ups[i] // applyUpdate may change the update; the fallback needs the original
		applyUpdate(&g, &u)
		g.UpdatedAt = now
		g.Revision = 0
		b, err := json.Marshal(&g)
		if err != nil {
			return err
		}
		key := h.store.Key("groups", g.ID)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", kvs[0].ModRevision))
		puts = append(puts, clientv3.OpPut(key, string(b)))
	}
	if len(puts) == 0 {
		return nil
	}
	tr, err := cli.Txn(ctx).If(cmps...).Then(puts...).Commit()
	if err != nil {
		return err
	}
	if tr.Succeeded {
		return nil
	}
	return h.applyEach(ctx, hostID, ups) // lost a race: one at a time
}

// applyEach writes updates one group at a time.
func (h *Hub) applyEach(ctx context.Context, hostID string, ups []hostapi.GroupUpdate) error {
	for _, u := range ups {
		_, err := h.store.UpdateGroup(ctx, u.ID, func(g *api.Group) error {
			if g.HostID != hostID {
				return store.ErrNoChange
			}
			applyUpdate(g, &u)
			return nil
		})
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return err
		}
	}
	return nil
}
