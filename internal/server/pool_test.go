package server

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/store"
)

func roomy(id string) poolHost {
	return poolHost{ID: id, Free: api.Resources{MilliCPU: 64000, Memory: 256 << 30, Groups: 4000}, LimitGroups: true}
}

func TestPlanTargetsSpreadAndCap(t *testing.T) {
	// Spread by free capacity: h2 has twice h1's room for c1.
	h1 := poolHost{ID: "h1", Free: api.Resources{MilliCPU: 10000, Memory: 64 << 30}}
	h2 := poolHost{ID: "h2", Free: api.Resources{MilliCPU: 20000, Memory: 64 << 30}}
	got := planTargets(map[string]int{"c1": 9}, []poolHost{h1, h2}, 100)
	if got["h1"]["c1"] != 3 || got["h2"]["c1"] != 6 {
		t.Fatalf("spread %v, want h1 3, h2 6", got)
	}
	// The per-host cap bounds every host, all classes together.
	got = planTargets(map[string]int{"c0.25": 50, "c1": 30}, []poolHost{roomy("a"), roomy("b")}, 20)
	for id, tg := range got {
		sum := 0
		for _, n := range tg {
			sum += n
		}
		if sum > 20 {
			t.Fatalf("host %s planned %d, over the cap 20: %v", id, sum, got)
		}
	}
	if got["a"]["c0.25"]+got["b"]["c0.25"] != 40 {
		t.Fatalf("the larger need fills first up to the caps: %v", got)
	}
	// No room: a full host gets nothing; no hosts, no plan.
	full := poolHost{ID: "full", Free: api.Resources{MilliCPU: 100, Memory: 1 << 30, Groups: 0}, LimitGroups: true}
	if got := planTargets(map[string]int{"c0.25": 5}, []poolHost{full}, 10); len(got) != 0 {
		t.Fatalf("planned on a full host: %v", got)
	}
	if got := planTargets(map[string]int{"c0.25": 5}, nil, 10); len(got) != 0 {
		t.Fatalf("planned with no hosts: %v", got)
	}
	if got := planTargets(map[string]int{"c0.25": 5}, []poolHost{roomy("a")}, 0); len(got) != 0 {
		t.Fatalf("planned with the planner off: %v", got)
	}
	// Deterministic.
	a := planTargets(map[string]int{"c0.5": 7}, []poolHost{roomy("x"), roomy("y"), roomy("z")}, 10)
	b := planTargets(map[string]int{"c0.5": 7}, []poolHost{roomy("z"), roomy("y"), roomy("x")}, 10)
	if a["x"].String() != b["x"].String() || a["y"].String() != b["y"].String() || a["z"].String() != b["z"].String() {
		t.Fatalf("not deterministic: %v vs %v", a, b)
	}
}

// The targets follow the forecast: ahead of a daily spike the planner asks
// for the spike, away from it only for the baseline; capped per host.
func TestPlannerDemandFollowsForecast(t *testing.T) {
	const season = 20
	cfg := PoolConfig{Bucket: time.Second, Season: season, Lead: 2, MaxPerHost: 1000}.withDefaults()
	p := &planner{cfg: cfg}
	width := cfg.Bucket.Milliseconds()
	// Three seasons of history: 1 create per bucket, 40 at phase 15.
	const first = int64(1_000_000)
	series := &store.HistorySeries{Account: "a", Image: "busybox", Class: "c0.25", WidthMs: width, First: first}
	for i := 0; i < 3*season; i++ {
		n := int64(1)
		if i%season == 15 {
			n = 40
		}
		series.Counts = append(series.Counts, n)
	}
	at := func(bucket int64) time.Time { return time.UnixMilli(bucket*width + width/2) }
	// Now is bucket 3*season+13 of the series: the spike is two buckets
	// ahead, inside the lead window. (The buckets after the history are
	// silent; give it the baseline for them.)
	ahead := *series
	ahead.Counts = append(append([]int64{}, series.Counts...), series.Counts[:13]...)
	// A second image of the same class that stopped long ago is not
	// predicted; the busy one is.
	quiet := &store.HistorySeries{Account: "a", Image: "nginx", Class: "c0.25", WidthMs: width, First: first, Counts: make([]int64, len(ahead.Counts))}
	quiet.Counts[0] = 1
	need, _, images := p.demand([]*store.HistorySeries{&ahead, quiet}, at(first+3*season+13))
	if need["c0.25"] < 30 {
		t.Fatalf("ahead of the spike: need %v, want about 40", need)
	}
	if got := images["c0.25"]; len(got) != 1 || got[0] != "busybox" {
		t.Errorf("predicted images %v, want [busybox]", got)
	}
	// Far from the spike: the baseline.
	away := *series
	away.Counts = append(append([]int64{}, series.Counts...), series.Counts[:3]...)
	need, _, _ = p.demand([]*store.HistorySeries{&away}, at(first+3*season+3))
	if need["c0.25"] > 10 || need["c0.25"] < 1 {
		t.Fatalf("away from the spike: need %v, want the baseline", need)
	}
	// The planned targets, capped per host.
	plan := planTargets(map[string]int{"c0.25": 40}, []poolHost{roomy("h1")}, 25)
	if plan["h1"]["c0.25"] != 25 {
		t.Fatalf("plan %v, want the cap 25", plan)
	}
	// A series silent for longer than the history keeps expires.
	old := &store.HistorySeries{Account: "b", Class: "c1", WidthMs: width, First: first, Counts: []int64{5}}
	_, expired, _ := p.demand([]*store.HistorySeries{old}, at(first+int64(cfg.keptBuckets())+5))
	if len(expired) != 1 {
		t.Fatal("a silent series did not expire")
	}
	// So does one recorded with another bucket width.
	other := &store.HistorySeries{Account: "c", Class: "c1", WidthMs: 60000, First: 1, Counts: []int64{5}}
	if _, expired, _ := p.demand([]*store.HistorySeries{other}, at(first)); len(expired) != 1 {
		t.Fatal("a series of another width did not expire")
	}
}

func TestWithPools(t *testing.T) {
	hosts := []api.Host{{ID: "h1"}, {ID: "h2"}, {ID: "h3"}}
	status := map[string]*api.HostPool{"h1": {Classes: []api.PoolClassStatus{{Class: "c1", Size: 2, Target: 2, Hits: 5}}}}
	targets := map[string]api.PoolTargets{"h1": {"c1": 4, "c0.5": 1}, "h2": {"c1": 3}}
	withPools(hosts, status, targets)
	if p := hosts[0].Pool; p == nil || len(p.Classes) != 2 || p.Classes[1].Target != 4 || p.Classes[1].Hits != 5 || p.Classes[0].Target != 1 {
		t.Fatalf("h1 pool %+v", hosts[0].Pool)
	}
	if p := hosts[1].Pool; p == nil || p.Classes[0].Target != 3 {
		t.Fatalf("h2 pool %+v", hosts[1].Pool)
	}
	if hosts[2].Pool != nil {
		t.Fatal("h3 has no pool")
	}
}

func TestHistoryRecorderCounts(t *testing.T) {
	r := newHistoryRecorder(nil, PoolConfig{Bucket: time.Second})
	now := time.UnixMilli(5_000_500)
	r.now = func() time.Time { return now }
	g := &api.Group{AccountID: "a", Spec: api.GroupSpec{Containers: []api.Container{{Name: "c", Image: "busybox"}}}}
	r.note(g)
	r.note(g)
	huge := &api.Group{AccountID: "a", Spec: api.GroupSpec{CPU: 64000, Containers: []api.Container{{Name: "c", Image: "busybox"}}}}
	r.note(huge) // fits no class: not counted
	r.note(nil)
	var nilRec *historyRecorder
	nilRec.note(g) // a service without a recorder
	if len(r.pending) != 1 {
		t.Fatalf("pending %v", r.pending)
	}
	for k, n := range r.pending {
		if n != 2 || k.Bucket != 5000 || k.Class != "c0.25" || k.Image != "busybox" {
			t.Fatalf("pending %+v = %d", k, n)
		}
	}
}

// With planning off (MaxPerHost 0), the planner clears the targets an
// earlier leader stored, so hosts stop holding pools nobody sizes.
func TestPlannerOffClearsTargets(t *testing.T) {
	ctx := context.Background()
	st := testStore(t)
	if err := st.PutPoolTargets(ctx, "h1", api.PoolTargets{"c0.25": 5}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutPoolTargets(ctx, "h2", api.PoolTargets{}); err != nil {
		t.Fatal(err)
	}
	leaderKey := st.Key("test-leader")
	resp, err := st.Client().Put(ctx, leaderKey, "me")
	if err != nil {
		t.Fatal(err)
	}
	guard := clientv3.Compare(clientv3.CreateRevision(leaderKey), "=", resp.Header.Revision)
	p := &planner{store: st, cfg: PoolConfig{MaxPerHost: 0}, log: slog.New(slog.DiscardHandler), now: time.Now}
	p.run(ctx, guard)
	got, err := st.ListPoolTargets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for id, tg := range got {
		if len(tg) != 0 {
			t.Errorf("host %s keeps targets %v with planning off", id, tg)
		}
	}
	// A stale guard (no longer leading) changes nothing.
	if err := st.PutPoolTargets(ctx, "h1", api.PoolTargets{"c1": 2}); err != nil {
		t.Fatal(err)
	}
	stale := clientv3.Compare(clientv3.CreateRevision(leaderKey), "=", resp.Header.Revision+1000)
	p.run(ctx, stale)
	if got, _ := st.ListPoolTargets(ctx); got["h1"]["c1"] != 2 {
		t.Errorf("a planner that does not lead cleared targets: %v", got["h1"])
	}
}

// A host is asked for the images of the classes it prepares for, most
// expected first, round-robin over classes, bounded.
func TestHostImages(t *testing.T) {
	byClass := map[string][]string{"c0.25": {"a", "b", "c"}, "c1": {"x", "a"}, "c4": {"big"}}
	got := hostImages(api.PoolTargets{"c0.25": 3, "c1": 1, "c4": 0}, byClass)
	want := []string{"a", "x", "b", "c"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("hostImages = %v, want %v", got, want)
	}
	if got := hostImages(api.PoolTargets{}, byClass); len(got) != 0 {
		t.Errorf("a host without targets is asked for %v", got)
	}
	many := map[string][]string{"c0.25": {}}
	for i := 0; i < 20; i++ {
		many["c0.25"] = append(many["c0.25"], fmt.Sprintf("img%02d", i))
	}
	if got := hostImages(api.PoolTargets{"c0.25": 1}, many); len(got) != maxPredictedImages || got[0] != "img00" {
		t.Errorf("hostImages = %v, want the first %d", got, maxPredictedImages)
	}
}
