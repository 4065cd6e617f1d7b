package store

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestAddBucketBounded(t *testing.T) {
	var h HistorySeries
	for b := int64(100); b < 130; b++ {
		addBucket(&h, b, 1, 10)
	}
	if len(h.Counts) != 10 || h.First != 120 || h.Last() != 129 {
		t.Fatalf("kept %d buckets from %d: want the last 10", len(h.Counts), h.First)
	}
	addBucket(&h, 125, 4, 10) // late increment inside the window
	if h.Counts[5] != 5 {
		t.Fatalf("bucket 125 = %d, want 5", h.Counts[5])
	}
	addBucket(&h, 50, 9, 10) // older than kept: ignored
	if h.First != 120 {
		t.Fatal("a too-old increment moved the window")
	}
	addBucket(&h, 118, 2, 10) // just before, still within the bound
	if h.First != 120 || len(h.Counts) != 10 {
		t.Fatalf("window %d+%d after an old increment", h.First, len(h.Counts))
	}
	addBucket(&h, 1000, 3, 10) // a long silence: a fresh series
	if h.First != 1000 || len(h.Counts) != 1 || h.Counts[0] != 3 {
		t.Fatalf("after a silence: %d %v", h.First, h.Counts)
	}
}

func TestHistoryMergeAndExpire(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	w := time.Second
	// Concurrent writers (replicas) add to the same series.
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.AddHistory(ctx, w, 5, []HistoryIncrement{
				{Account: "a", Image: "busybox", Class: "c0.25", Bucket: 10, Count: 2},
				{Account: "a", Image: "busybox", Class: "c0.25", Bucket: 11, Count: 1},
				{Account: "b", Image: "nginx", Class: "c1", Bucket: 11, Count: 1},
			}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	hs, err := s.ListHistory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 2 {
		t.Fatalf("%d series, want 2", len(hs))
	}
	for _, h := range hs {
		switch h.Account {
		case "a":
			if h.First != 10 || len(h.Counts) != 2 || h.Counts[0] != 16 || h.Counts[1] != 8 {
				t.Fatalf("series a: %d %v", h.First, h.Counts)
			}
		case "b":
			if h.Counts[len(h.Counts)-1] != 8 {
				t.Fatalf("series b: %v", h.Counts)
			}
		}
	}
	// Bounded: 20 more buckets leave 5.
	for b := int64(12); b < 32; b++ {
		if err := s.AddHistory(ctx, w, 5, []HistoryIncrement{{Account: "a", Image: "busybox", Class: "c0.25", Bucket: b, Count: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	hs, _ = s.ListHistory(ctx)
	for _, h := range hs {
		if h.Account == "a" && (len(h.Counts) != 5 || h.Last() != 31) {
			t.Fatalf("series a holds %d buckets ending %d, want 5 ending 31", len(h.Counts), h.Last())
		}
		if h.Account == "b" {
			if err := s.DeleteHistory(ctx, h); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A changed bucket width starts the series afresh.
	if err := s.AddHistory(ctx, time.Minute, 5, []HistoryIncrement{{Account: "a", Image: "busybox", Class: "c0.25", Bucket: 7, Count: 1}}); err != nil {
		t.Fatal(err)
	}
	hs, _ = s.ListHistory(ctx)
	if len(hs) != 1 || hs[0].WidthMs != 60000 || len(hs[0].Counts) != 1 {
		t.Fatalf("after expiry and a width change: %+v", hs)
	}
}

func TestPoolRecords(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if tg, err := s.GetPoolTargets(ctx, "h1"); err != nil || len(tg) != 0 {
		t.Fatalf("no targets: %v %v", tg, err)
	}
	if err := s.PutPoolTargets(ctx, "h1", api.PoolTargets{"c1": 3}); err != nil {
		t.Fatal(err)
	}
	never := clientv3.Compare(clientv3.CreateRevision(s.Key("no-such-leader")), ">", 0)
	if err := s.PutPoolTargets(ctx, "h1", api.PoolTargets{"c1": 9}, never); !errors.Is(err, ErrGuard) {
		t.Fatalf("guarded put: %v", err)
	}
	if tg, _ := s.GetPoolTargets(ctx, "h1"); tg["c1"] != 3 {
		t.Fatalf("targets %v", tg)
	}
	if err := s.PutPoolStatus(ctx, "h1", &api.HostPool{Classes: []api.PoolClassStatus{{Class: "c1", Size: 2}}}); err != nil {
		t.Fatal(err)
	}
	ps, _ := s.ListPoolStatus(ctx)
	all, _ := s.ListPoolTargets(ctx)
	if ps["h1"].Classes[0].Size != 2 || all["h1"]["c1"] != 3 {
		t.Fatalf("status %v targets %v", ps, all)
	}
}
