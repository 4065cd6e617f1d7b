package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func freeURL(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "http://" + l.Addr().String()
}

// newStore runs a real embedded etcd for the test.
func newStore(t testing.TB) *Store {
	t.Helper()
	ctx := context.Background()
	e, err := StartEmbedded(ctx, EmbeddedConfig{Dir: t.TempDir(), ClientURL: freeURL(t), PeerURL: freeURL(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	cli, err := Dial(ctx, []string{e.ClientURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return New(cli, "/test/")
}

func TestGroupCreateConflictsAndToken(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	g := &api.Group{ID: "g1", Name: "web", AccountID: "a", ClientToken: "t", Status: api.StatusPending}
	if _, err := s.CreateGroup(ctx, g); err != nil {
		t.Fatal(err)
	}
	// Same token: the first group comes back.
	again := &api.Group{ID: "g2", Name: "other", AccountID: "a", ClientToken: "t"}
	got, err := s.CreateGroup(ctx, again)
	if !errors.Is(err, ErrTokenUsed) || got == nil || got.ID != "g1" {
		t.Fatalf("token reuse: %v %+v", err, got)
	}
	// Same name, no token: conflict, nothing written.
	if _, err := s.CreateGroup(ctx, &api.Group{ID: "g3", Name: "web", AccountID: "a"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("name reuse: %v", err)
	}
	if _, err := s.GetGroup(ctx, "g3"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("conflicting create wrote a record: %v", err)
	}
	// The same name in another account is fine.
	if _, err := s.CreateGroup(ctx, &api.Group{ID: "g4", Name: "web", AccountID: "b"}); err != nil {
		t.Fatal(err)
	}
	if id, err := s.GroupIDByName(ctx, "b", "web"); err != nil || id != "g4" {
		t.Fatalf("by name: %q %v", id, err)
	}
	// Delete frees name and token.
	if err := s.DeleteGroup(ctx, g); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateGroup(ctx, &api.Group{ID: "g5", Name: "web", AccountID: "a", ClientToken: "t"}); err != nil {
		t.Fatalf("after delete: %v", err)
	}
}

func TestUpdateGroupIsAtomicUnderContention(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if _, err := s.CreateGroup(ctx, &api.Group{ID: "g", Name: "g", AccountID: "a"}); err != nil {
		t.Fatal(err)
	}
	const n = 20
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.UpdateGroup(ctx, "g", func(g *api.Group) error { g.RestartGeneration++; return nil }); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	g, err := s.GetGroup(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if g.RestartGeneration != n {
		t.Fatalf("lost updates: generation %d, want %d", g.RestartGeneration, n)
	}
}

func TestUpdateGroupGuard(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if _, err := s.CreateGroup(ctx, &api.Group{ID: "g", Name: "g", AccountID: "a"}); err != nil {
		t.Fatal(err)
	}
	// A guard on a key that does not exist fails: the write must not happen.
	guard := clientv3.Compare(clientv3.CreateRevision("/test/leader/nobody"), ">", 0)
	_, err := s.UpdateGroup(ctx, "g", func(g *api.Group) error { g.HostID = "h"; return nil }, guard)
	if !errors.Is(err, ErrGuard) {
		t.Fatalf("want ErrGuard, got %v", err)
	}
	g, _ := s.GetGroup(ctx, "g")
	if g.HostID != "" {
		t.Fatal("guarded write happened")
	}
}

func TestWatchSeesChanges(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, rev, err := s.ListGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ch := s.WatchGroups(ctx, rev)
	g := &api.Group{ID: "w", Name: "w", AccountID: "a"}
	if _, err := s.CreateGroup(ctx, g); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateGroup(ctx, "w", func(g *api.Group) error { g.Status = api.StatusRunning; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteGroup(ctx, g); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 3 {
		select {
		case ev := <-ch:
			got = append(got, fmt.Sprintf("%s:%s", ev.Type, ev.Group.ID))
		case <-ctx.Done():
			t.Fatalf("watch saw only %v", got)
		}
	}
	want := []string{"ADDED:w", "MODIFIED:w", "DELETED:w"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestEventsAreBounded(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	var evs []api.Event
	for i := 0; i < MaxEventsPerGroup+30; i++ {
		evs = append(evs, api.Event{GroupID: "g", Reason: fmt.Sprint(i), Time: time.Unix(int64(1000+i), 0)})
	}
	if err := s.AppendEvents(ctx, evs...); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListEvents(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != MaxEventsPerGroup || got[len(got)-1].Reason != fmt.Sprint(MaxEventsPerGroup+29) {
		t.Fatalf("got %d events, last %q", len(got), got[len(got)-1].Reason)
	}
	again, _ := s.ListEvents(ctx, "g")
	if len(again) != MaxEventsPerGroup {
		t.Fatalf("trim did not stick: %d", len(again))
	}
}
