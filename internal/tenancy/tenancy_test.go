package tenancy

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/store"
)

func freeURL(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "http://" + l.Addr().String()
}

func newStore(t testing.TB) *store.Store {
	t.Helper()
	ctx := context.Background()
	e, err := store.StartEmbedded(ctx, store.EmbeddedConfig{Dir: t.TempDir(), ClientURL: freeURL(t), PeerURL: freeURL(t)})
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

func spotGroup(id, host string, cpu int64, since time.Time, marked bool) *api.Group {
	g := &api.Group{ID: id, HostID: host, Status: api.StatusRunning, CreatedAt: since, ScheduledAt: &since,
		Spec: api.GroupSpec{CPU: api.CPU(cpu), Memory: api.Quantity(1 << 30), SpotStrategy: api.SpotAsPriceGo, Containers: []api.Container{{Name: "a"}}}}
	if marked {
		g.SpotReclaimAt = &since
	}
	return g
}

func TestPlanReclaim(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	host := func(id string, usedCPU int64) HostView {
		return HostView{ID: id, Ready: true, Capacity: api.Resources{MilliCPU: 4000, Memory: 16 << 30, Groups: 10},
			Allocated: api.Resources{MilliCPU: usedCPU, Memory: 4 << 30, Groups: 3}}
	}
	tests := []struct {
		name   string
		hosts  []HostView
		groups []*api.Group
		needs  []Need
		want   []string
	}{
		{"youngest spot goes first", []HostView{host("h1", 4000)},
			[]*api.Group{spotGroup("old", "h1", 1000, t0, false), spotGroup("young", "h1", 1000, t0.Add(time.Hour), false)},
			[]Need{{MilliCPU: 1000, Memory: 1 << 30}}, []string{"young"}},
		{"enough victims for a big need", []HostView{host("h1", 4000)},
			[]*api.Group{spotGroup("a", "h1", 1000, t0, false), spotGroup("b", "h1", 1000, t0.Add(time.Minute), false)},
			[]Need{{MilliCPU: 2000, Memory: 1 << 30}}, []string{"b", "a"}},
		{"fewest evictions wins", []HostView{host("h1", 4000), host("h2", 4000)},
			[]*api.Group{spotGroup("a1", "h1", 500, t0, false), spotGroup("a2", "h1", 500, t0, false), spotGroup("b1", "h2", 2000, t0, false)},
			[]Need{{MilliCPU: 1000, Memory: 1 << 30}}, []string{"b1"}},
		{"already marked counts as freed", []HostView{host("h1", 4000)},
			[]*api.Group{spotGroup("m", "h1", 1000, t0, true), spotGroup("x", "h1", 1000, t0, false)},
			[]Need{{MilliCPU: 1000, Memory: 1 << 30}}, nil},
		{"two needs do not share freed capacity", []HostView{host("h1", 4000)},
			[]*api.Group{spotGroup("m", "h1", 1000, t0, true), spotGroup("x", "h1", 1000, t0, false)},
			[]Need{{MilliCPU: 1000, Memory: 1 << 30}, {MilliCPU: 1000, Memory: 1 << 30}}, []string{"x"}},
		{"cannot fit even with all spot gone", []HostView{host("h1", 4000)},
			[]*api.Group{spotGroup("x", "h1", 1000, t0, false)},
			[]Need{{MilliCPU: 3000, Memory: 1 << 30}}, nil},
		{"zone is respected", []HostView{{ID: "h1", Zone: "a", Ready: true, Capacity: api.Resources{MilliCPU: 1000, Memory: 4 << 30}, Allocated: api.Resources{MilliCPU: 1000, Memory: 1 << 30}}},
			[]*api.Group{spotGroup("x", "h1", 1000, t0, false)},
			[]Need{{MilliCPU: 1000, Memory: 1 << 30, Zone: "b"}}, nil},
		{"on-demand groups are never victims", []HostView{host("h1", 4000)},
			[]*api.Group{{ID: "od", HostID: "h1", Status: api.StatusRunning, Spec: api.GroupSpec{CPU: 4000, Containers: []api.Container{{Name: "a"}}}}},
			[]Need{{MilliCPU: 1000, Memory: 1 << 30}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := PlanReclaim(tc.hosts, tc.groups, tc.needs)
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestBilledSeconds(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	tests := []struct {
		start, end, from, to float64
		want                 int64
	}{
		{0, 10, 0, 100, 10},
		{0.4, 10.2, 0, 100, 11}, // start rounds down, end up
		{0, 10, 5, 100, 5},
		{0, 10, 0, 5, 5},
		{20, 30, 0, 10, 0},
		{5, 5, 0, 10, 0},
	}
	for _, tc := range tests {
		if got, _, _ := billedSeconds(at(tc.start), at(tc.end), at(tc.from), at(tc.to)); got != tc.want {
			t.Errorf("%+v: got %d", tc, got)
		}
	}
}

// TestMeteringAcrossRestarts: closing is idempotent, and a new manager on
// the same store (a restarted server, a new leader) reports the same
// closed intervals and carries open ones on with no gap.
func TestMeteringAcrossRestarts(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0.Add(20 * time.Second)
	clock := func() time.Time { return now }
	m1 := New(st, Config{Now: clock})
	sched := t0
	fin := t0.Add(10*time.Second + 500*time.Millisecond)
	ended := &api.Group{ID: "g-ended", Name: "ended", AccountID: "acme", Status: api.StatusSucceeded, ScheduledAt: &sched, FinishedAt: &fin,
		Spec: api.GroupSpec{CPU: 2000, Memory: 1 << 30, Containers: []api.Container{{Name: "a"}}}}
	running := &api.Group{ID: "g-run", Name: "run", AccountID: "acme", Status: api.StatusRunning, ScheduledAt: &sched,
		Spec: api.GroupSpec{CPU: 1000, Memory: 2 << 30, SpotStrategy: api.SpotAsPriceGo, Containers: []api.Container{{Name: "a"}}}}
	other := &api.Group{ID: "g-other", Name: "o", AccountID: "other", Status: api.StatusRunning, ScheduledAt: &sched,
		Spec: api.GroupSpec{CPU: 1000, Containers: []api.Container{{Name: "a"}}}}
	groups := []*api.Group{ended, running, other}

	if err := m1.MeterRound(ctx, groups); err != nil {
		t.Fatal(err)
	}
	if err := m1.MeterRound(ctx, groups); err != nil {
		t.Fatal(err)
	}
	// A delete of the ended group later must not bill it again either.
	if err := m1.CloseDeleted(ctx, ended); err != nil {
		t.Fatal(err)
	}
	m2 := New(st, Config{Now: clock}) // "restarted"
	if err := m2.MeterRound(ctx, groups); err != nil {
		t.Fatal(err)
	}
	led, _ := st.ListLedger(ctx, "acme")
	if len(led) != 1 {
		t.Fatalf("ledger has %d entries, want 1", len(led))
	}
	rep, err := m2.Report(ctx, "acme", groups, t0, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Lines) != 2 {
		t.Fatalf("lines: %+v", rep.Lines)
	}
	byID := map[string]api.UsageLine{}
	for _, l := range rep.Lines {
		byID[l.GroupID] = l
	}
	if l := byID["g-ended"]; l.Seconds != 11 || l.VCPUSeconds != 22 || l.GiBSeconds != 11 || l.Open {
		t.Errorf("ended: %+v", l)
	}
	if l := byID["g-run"]; l.Seconds != 20 || !l.Open || !l.Spot || l.GiBSeconds != 40 {
		t.Errorf("running: %+v", l)
	}
	wantCost := 22*DefaultPrices.OnDemand.VCPUHour/3600 + 11*DefaultPrices.OnDemand.GiBHour/3600 +
		20*DefaultPrices.Spot.VCPUHour/3600 + 40*DefaultPrices.Spot.GiBHour/3600
	if d := rep.Cost - wantCost; d > 1e-5 || d < -1e-5 {
		t.Errorf("cost %v, want %v", rep.Cost, wantCost)
	}
	// Periods add up: splitting the hour changes nothing.
	a, _ := m2.Report(ctx, "acme", groups, t0, t0.Add(7*time.Second))
	b, _ := m2.Report(ctx, "acme", groups, t0.Add(7*time.Second), t0.Add(time.Hour))
	if a.VCPUSeconds+b.VCPUSeconds != rep.VCPUSeconds {
		t.Errorf("split %v + %v != %v", a.VCPUSeconds, b.VCPUSeconds, rep.VCPUSeconds)
	}
	// Ten seconds later, after another "restart", the open interval has
	// grown by exactly ten seconds: no gap, no double count.
	now = now.Add(10 * time.Second)
	m3 := New(st, Config{Now: clock})
	rep3, _ := m3.Report(ctx, "acme", groups, t0, t0.Add(time.Hour))
	for _, l := range rep3.Lines {
		if l.GroupID == "g-run" && l.Seconds != 30 {
			t.Errorf("after restart: %+v", l)
		}
	}
	// The running group is deleted: closed at the delete, once.
	if err := m3.CloseDeleted(ctx, running); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	rep4, _ := m3.Report(ctx, "acme", groups, t0, t0.Add(3*time.Hour))
	for _, l := range rep4.Lines {
		if l.GroupID == "g-run" && (l.Seconds != 30 || l.Open) {
			t.Errorf("after delete: %+v", l)
		}
	}
}

func TestQuotaAdmissionUnderRace(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	m := New(st, Config{})
	if _, err := m.CreateAccount(ctx, api.CreateAccountRequest{Name: "acme", Quota: api.Quota{MilliCPU: 5000, Memory: 100 << 30}}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted, refused := 0, 0
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			g := &api.Group{ID: "g-" + string(rune('a'+i%26)) + string(rune('a'+i/26)), AccountID: "acme", Status: api.StatusPending,
				Spec: api.GroupSpec{CPU: 1000, Memory: 1 << 30, Containers: []api.Container{{Name: "a"}}}}
			g.Name = g.ID
			_, err := m.CreateGroup(ctx, g)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				admitted++
			case errors.Is(err, errdefs.ErrQuota):
				refused++
			default:
				t.Errorf("create: %v", err)
			}
		}(i)
	}
	wg.Wait()
	if admitted != 5 || refused != 35 {
		t.Fatalf("admitted %d refused %d, want 5 and 35", admitted, refused)
	}
	u, err := m.Usage(ctx, "acme")
	if err != nil || u.MilliCPU != 5000 || u.Groups != 5 {
		t.Fatalf("usage %+v %v", u, err)
	}
}

func TestCheckSpot(t *testing.T) {
	m := New(nil, Config{})
	spec := func(strategy string, limit float64) *api.GroupSpec {
		return &api.GroupSpec{CPU: 2000, Memory: 4 << 30, SpotStrategy: strategy, SpotPriceLimit: limit, Containers: []api.Container{{Name: "a"}}}
	}
	p := m.Price(2000, 4<<30, true).Hourly
	for _, tc := range []struct {
		s  *api.GroupSpec
		ok bool
	}{
		{spec("", 0), true}, {spec(api.SpotNone, 0), true}, {spec(api.SpotAsPriceGo, 0), true},
		{spec(api.SpotWithLimit, p*2), true}, {spec(api.SpotWithLimit, p/2), false}, {spec(api.SpotWithLimit, 0), false},
		{spec("Bogus", 0), false}, {spec("", 1), false},
	} {
		if err := m.CheckSpot(tc.s); (err == nil) != tc.ok {
			t.Errorf("%s/%v: %v", tc.s.SpotStrategy, tc.s.SpotPriceLimit, err)
		}
	}
}
