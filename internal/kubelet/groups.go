package kubelet

import (
	"context"
	"sync"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

// groupCache mirrors this node's groups, fed by skiff's watch stream.
type groupCache struct {
	mu     sync.RWMutex
	byUID  map[string]*api.Group
	synced chan struct{}
	once   sync.Once
}

func newGroupCache() *groupCache {
	return &groupCache{byUID: map[string]*api.Group{}, synced: make(chan struct{})}
}

func podKeyOf(g *api.Group) string {
	return g.Labels[LabelNamespace] + "/" + g.Labels[LabelPod]
}

// put stores g unless the cache holds a newer revision.
func (c *groupCache) put(g *api.Group) {
	uid := g.Labels[LabelUID]
	if uid == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.byUID[uid]; ok && old.Revision > g.Revision && g.Revision != 0 {
		return
	}
	c.byUID[uid] = g
}

func (c *groupCache) remove(g *api.Group) {
	uid := g.Labels[LabelUID]
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.byUID[uid]; ok && old.ID == g.ID {
		delete(c.byUID, uid)
	}
}

// replace sets the whole content from a list.
func (c *groupCache) replace(gs []api.Group) {
	m := make(map[string]*api.Group, len(gs))
	for i := range gs {
		g := &gs[i]
		if uid := g.Labels[LabelUID]; uid != "" {
			m[uid] = g
		}
	}
	c.mu.Lock()
	// Keep entries put meanwhile that are newer than the list.
	for uid, g := range c.byUID {
		if n, ok := m[uid]; ok && n.Revision < g.Revision {
			m[uid] = g
		}
	}
	c.byUID = m
	c.mu.Unlock()
	c.once.Do(func() { close(c.synced) })
}

func (c *groupCache) get(uid string) *api.Group {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.byUID[uid]
}

// forPod returns the groups labelled with pod namespace/name.
func (c *groupCache) forPod(key string) []*api.Group {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []*api.Group
	for _, g := range c.byUID {
		if podKeyOf(g) == key {
			out = append(out, g)
		}
	}
	return out
}

func (c *groupCache) podKeys() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]string, 0, len(c.byUID))
	for _, g := range c.byUID {
		out = append(out, podKeyOf(g))
	}
	return out
}

func (c *groupCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.byUID)
}

func clientListOne() client.ListOptions { return client.ListOptions{Limit: 1} }

// watchGroups keeps the group cache current: it opens skiff's watch, then
// lists (so nothing between the two is missed), then applies events as
// they come and enqueues the pods they belong to. A broken stream is
// reopened, with a fresh list.
func (k *Kubelet) watchGroups(ctx context.Context) {
	sel := map[string]string{LabelNode: k.cfg.NodeName}
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		w, err := k.skiff.Watch(ctx, client.WatchOptions{Labels: sel})
		if err != nil {
			k.log.Warn("skiff watch", "err", err)
			sleepCtx(ctx, backoff)
			backoff = min(2*backoff, 10*time.Second)
			continue
		}
		gs, err := k.skiff.ListAllGroups(ctx, client.ListOptions{Labels: sel, All: true})
		if err != nil {
			w.Close()
			k.log.Warn("skiff list groups", "err", err)
			sleepCtx(ctx, backoff)
			backoff = min(2*backoff, 10*time.Second)
			continue
		}
		backoff = 200 * time.Millisecond
		before := k.groups.podKeys()
		k.groups.replace(gs)
		if k.queue != nil {
			for _, key := range before {
				k.queue.Add(key)
			}
			for i := range gs {
				k.queue.Add(podKeyOf(&gs[i]))
			}
		}
		for w.Next() {
			ev := w.Event()
			if ev.Group == nil {
				continue
			}
			if ev.Type == "DELETED" {
				k.groups.remove(ev.Group)
			} else {
				k.groups.put(ev.Group)
			}
			k.queue.Add(podKeyOf(ev.Group))
		}
		if err := w.Err(); err != nil && ctx.Err() == nil {
			k.log.Warn("skiff watch ended", "err", err)
		}
		w.Close()
		sleepCtx(ctx, backoff)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
