package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/scheduler"
	"github.com/skiffhq/skiff/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func testStore(t *testing.T) *store.Store {
	t.Helper()
	ctx := context.Background()
	e, err := store.StartEmbedded(ctx, store.EmbeddedConfig{Dir: t.TempDir(),
		ClientURL: fmt.Sprintf("http://127.0.0.1:%d", freePort(t)), PeerURL: fmt.Sprintf("http://127.0.0.1:%d", freePort(t))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	cli, err := store.Dial(ctx, []string{e.ClientURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return store.New(cli, "/test/")
}

func TestPreplace(t *testing.T) {
	st := testStore(t)
	ctx := context.Background()
	c := &controller{store: st, log: slog.New(slog.NewTextHandler(io.Discard, nil)), policy: scheduler.Spread}
	for _, id := range []string{"h1", "h2"} {
		if err := st.PutHost(ctx, &api.Host{ID: id, Name: id, State: api.HostReady, Capacity: api.Resources{MilliCPU: 1000, Memory: 8 << 30, Groups: 100}}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Client().Put(ctx, st.AliveKey(id), "x"); err != nil {
			t.Fatal(err)
		}
	}
	// h2 holds prepared sandboxes of c0.25: pre-placement prefers it.
	if err := st.PutPoolStatus(ctx, "h2", &api.HostPool{Classes: []api.PoolClassStatus{{Class: "c0.25", Size: 3}}}); err != nil {
		t.Fatal(err)
	}
	leaderKey := st.Key("test-leader")
	resp, err := st.Client().Put(ctx, leaderKey, "me")
	if err != nil {
		t.Fatal(err)
	}
	guard := clientv3.Compare(clientv3.CreateRevision(leaderKey), "=", resp.Header.Revision)
	// A round with nothing pending leaves the view.
	if err := c.schedule(ctx, guard); err != nil {
		t.Fatal(err)
	}
	create := func(n int) []*api.Group {
		var out []*api.Group
		for i := 0; i < n; i++ {
			id := newID("g-")
			g := &api.Group{ID: id, Name: id, AccountID: "a", Status: api.StatusPending,
				Spec: api.GroupSpec{CPU: 250, Memory: 256 << 20, Containers: []api.Container{{Name: "c", Image: "busybox"}}}}
			stored, err := st.CreateGroup(ctx, g)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, stored)
		}
		return out
	}
	hostOf := func(gs []*api.Group) map[string]int {
		m := map[string]int{}
		for _, g := range gs {
			cur, err := st.GetGroup(ctx, g.ID)
			if err != nil {
				t.Fatal(err)
			}
			if cur.HostID != "" && (cur.Status != api.StatusScheduling || cur.ScheduledAt == nil) {
				t.Fatalf("placed group %s is %s", cur.ID, cur.Status)
			}
			m[cur.HostID]++
		}
		return m
	}

	// Warm hosts first.
	first := create(3)
	if n := c.preplace(ctx, first); n != 3 {
		t.Fatalf("pre-placed %d of 3", n)
	}
	if m := hostOf(first); m["h2"] != 3 {
		t.Fatalf("placement %v: want all three on h2, the host with a warm pool", m)
	}
	// Capacity holds: 8 × 250m fit the two hosts, 3 are taken.
	more := create(7)
	if n := c.preplace(ctx, more); n != 5 {
		t.Fatalf("pre-placed %d of 7, want the 5 that fit", n)
	}
	all := hostOf(append(first, more...))
	if all["h1"] != 4 || all["h2"] != 4 || all[""] != 2 {
		t.Fatalf("placement %v: want 4 per host, 2 left for the round", all)
	}
	// A round in progress: pre-placement stands aside.
	if err := c.schedule(ctx, guard); err != nil {
		t.Fatal(err)
	}
	c.gate.Lock()
	if n := c.preplace(ctx, create(1)); n != 0 {
		t.Fatal("pre-placed during a round")
	}
	c.gate.Unlock()
	// Lost leadership: the guard drops the decision. (Room first, and a
	// fresh view, so that only the leadership guard can stop it.)
	for _, h := range []string{"h1", "h2"} {
		if _, err := st.UpdateHost(ctx, h, func(h *api.Host) error { h.Capacity.MilliCPU = 4000; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.schedule(ctx, guard); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Client().Delete(ctx, leaderKey); err != nil {
		t.Fatal(err)
	}
	late := create(1)
	c.preplace(ctx, late)
	if m := hostOf(late); m[""] != 1 {
		t.Fatalf("placed without leadership: %v", m)
	}
	// No view (not leading): nothing.
	c.dropLedger()
	if n := c.preplace(ctx, create(1)); n != 0 {
		t.Fatal("pre-placed without a view")
	}
}
