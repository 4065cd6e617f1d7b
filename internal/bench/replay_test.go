package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
)

func TestTraceIsDeterministic(t *testing.T) {
	c := DefaultTrace()
	a, err := GenerateTrace(c)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := GenerateTrace(c)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same config gave two traces")
	}
	c.Seed = 2
	d, _ := GenerateTrace(c)
	if reflect.DeepEqual(a, d) {
		t.Fatal("seeds 1 and 2 gave the same trace")
	}
	for i := 1; i < len(a); i++ {
		if a[i].At < a[i-1].At {
			t.Fatalf("not sorted at %d", i)
		}
	}
}

func TestTraceSpikesAndCounts(t *testing.T) {
	c := DefaultTrace()
	c.Days, c.Scale = 4, 1.5
	evs, err := GenerateTrace(c)
	if err != nil {
		t.Fatal(err)
	}
	type key struct{ day, spike int }
	spikes := map[key]int{}
	base := make([]int, c.Days)
	var night, noon int // the base in the middle third vs the outer thirds
	for _, e := range evs {
		if e.Day != int(e.At/c.Day) {
			t.Fatalf("event at %s says day %d", e.At, e.Day)
		}
		if e.Life < c.LifeMin || e.Life > c.LifeMax {
			t.Fatalf("lifetime %s outside %s..%s", e.Life, c.LifeMin, c.LifeMax)
		}
		if e.Spike < 0 {
			base[e.Day]++
			ph := float64(e.At%c.Day) / float64(c.Day)
			if ph >= 1.0/3 && ph < 2.0/3 {
				noon++
			} else if ph < 1.0/6 || ph >= 5.0/6 {
				night++
			}
			continue
		}
		spikes[key{e.Day, e.Spike}]++
		sp := c.Spikes[e.Spike]
		start := time.Duration(e.Day)*c.Day + time.Duration(sp.At*float64(c.Day))
		if e.At < start || e.At >= start+sp.Width {
			t.Errorf("spike %d create at %s, outside %s+%s", e.Spike, e.At, start, sp.Width)
		}
	}
	for d := range c.Days {
		for i, sp := range c.Spikes {
			want := int(math.Round(float64(sp.Size) * c.Scale))
			if got := spikes[key{d, i}]; got != want {
				t.Errorf("day %d spike %d: %d creates, want %d", d, i, got, want)
			}
		}
		// Poisson: mean BaseRate×Scale×Day; allow five standard deviations.
		mean := c.BaseRate * c.Scale * c.Day.Seconds()
		if got := float64(base[d]); math.Abs(got-mean) > 5*math.Sqrt(mean) {
			t.Errorf("day %d: %v base creates, want about %.0f", d, got, mean)
		}
	}
	if noon < 3*night {
		t.Errorf("diurnal shape: %d creates around noon vs %d around midnight", noon, night)
	}
	if got, want := c.MeanRate(), c.BaseRate*c.Scale+(60+38)/c.Day.Seconds(); math.Abs(got-want) > 1e-9 {
		t.Errorf("mean rate %v, want %v", got, want)
	}
}

func TestTraceValidate(t *testing.T) {
	for _, mod := range []func(*TraceConfig){
		func(c *TraceConfig) { c.Days = 0 },
		func(c *TraceConfig) { c.Day = 1500 * time.Millisecond },
		func(c *TraceConfig) { c.Scale = 0 },
		func(c *TraceConfig) { c.LifeMax = c.LifeMin - 1 },
		func(c *TraceConfig) { c.Spikes = []Spike{{At: 1, Size: 1}} },
		func(c *TraceConfig) { c.Spikes = []Spike{{At: 0.5, Size: 1, Width: time.Minute}} },
	} {
		c := DefaultTrace()
		mod(&c)
		if _, err := GenerateTrace(c); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}

func TestFixedPoolSize(t *testing.T) {
	c := DefaultTrace() // 0.75/s + 65 per 120s = 1.29/s
	if got := FixedPoolSize(c, 5*time.Second); got != 7 {
		t.Errorf("fixed pool %d, want 7", got)
	}
	c.BaseRate, c.Spikes = 0, nil
	if got := FixedPoolSize(c, 5*time.Second); got != 1 {
		t.Errorf("fixed pool of an empty trace %d, want 1", got)
	}
}

// summarize counts only the measured day, places counter changes at
// their report times and averages the pool over the day.
func TestSummarize(t *testing.T) {
	cfg := ReplayConfig{Trace: TraceConfig{Day: 60 * time.Second, Spikes: []Spike{{At: 0.5, Size: 2, Width: time.Second}}}}
	mReal := time.Unix(1000, 0)
	mStart := 60 * time.Second
	rec := func(at time.Duration, ms int, running bool) *createRecord {
		sent := mReal.Add(at - mStart)
		return &createRecord{ev: TraceEvent{At: at}, sent: sent, seen: sent.Add(time.Duration(ms+5) * time.Millisecond),
			apiCreated: sent, apiRun: sent.Add(time.Duration(ms) * time.Millisecond), running: running, failed: !running}
	}
	recs := []*createRecord{
		rec(59*time.Second, 999, true), // the day before: not counted
		rec(61*time.Second, 10, true),
		rec(90*time.Second, 20, true), // in the spike
		rec(90500*time.Millisecond, 300, true),
		rec(100*time.Second, 0, false),
		nil, // never sent (cancelled)
	}
	snap := func(at time.Duration, size, target int, hits, misses int64) PoolSnapshot {
		t := mReal.Add(at)
		return PoolSnapshot{At: t, NewestReport: t, Reported: true, Size: size, Target: target, Hits: hits, Misses: misses}
	}
	samples := []PoolSnapshot{
		snap(-2*time.Second, 5, 5, 7, 3), // before: the base line
		snap(2*time.Second, 4, 5, 8, 3),
		snap(31*time.Second, 2, 5, 9, 4),
		snap(32*time.Second, 3, 5, 10, 5),
	}
	var mr ModeResult
	summarize(&mr, cfg, recs, samples, mReal, mStart)
	if mr.Creates != 4 || mr.Running != 3 || mr.Failed != 1 {
		t.Errorf("creates %d running %d failed %d, want 4 3 1", mr.Creates, mr.Running, mr.Failed)
	}
	if mr.Hits != 3 || mr.Misses != 2 || math.Abs(mr.HitRate-0.6) > 1e-9 {
		t.Errorf("hits %d misses %d rate %v, want 3 2 0.6", mr.Hits, mr.Misses, mr.HitRate)
	}
	if mr.P50Ms != 20 || mr.P99Ms != 300 || mr.SpikeP99Ms != 300 {
		t.Errorf("p50 %v p99 %v spike p99 %v, want 20 300 300", mr.P50Ms, mr.P99Ms, mr.SpikeP99Ms)
	}
	if mr.MeanPoolSize != 3 || mr.MaxPoolSize != 4 || mr.MeanPoolTarget != 5 {
		t.Errorf("pool mean %v max %d target %v, want 3 4 5", mr.MeanPoolSize, mr.MaxPoolSize, mr.MeanPoolTarget)
	}
	bw := bucketWidth(cfg.Trace.Day).Seconds() // 2s
	if len(mr.Series) != 30 || bw != 2 {
		t.Fatalf("%d buckets of %vs, want 30 of 2s", len(mr.Series), bw)
	}
	if b := mr.Series[1]; b.Hits != 1 || b.Demand != 0 || b.PoolSize != 4 {
		t.Errorf("bucket 1: %+v", b)
	}
	if b := mr.Series[15]; b.Demand != 2 || b.Hits != 1 || b.Misses != 1 {
		t.Errorf("bucket 15: %+v", b)
	}
	if b := mr.Series[10]; b.PoolSize != 4 { // no reading: the one before
		t.Errorf("bucket 10 pool %v, want 4 carried over", b.PoolSize)
	}
	if _, err := json.Marshal(mr); err != nil {
		t.Fatal(err)
	}
}

func TestReplaySVGAndTable(t *testing.T) {
	r := &ReplayResult{Seed: 1, Days: 3, DaySeconds: 60, Class: "c0.25", BucketSecs: 2, Spikes: []Spike{{At: 0.5, Size: 3, Width: time.Second}}}
	for i, m := range []string{ModeForecast, ModeNone, ModeFixed} {
		mr := ModeResult{Mode: m, Setup: "s <&>", Creates: 10, Hits: int64(i), Misses: int64(10 - i), HitRate: float64(i) / 10, PoolReported: true}
		for b := range 30 {
			mr.Series = append(mr.Series, ReplayBucket{T: float64(2 * b), Demand: b % 4, PoolSize: float64(b % 3), Target: 2, Hits: int64(b % 2), Misses: 1})
		}
		r.Modes = append(r.Modes, mr)
	}
	r.Modes[2].Error = "start: boom"
	var b bytes.Buffer
	if err := WriteReplaySVG(&b, r); err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(bytes.NewReader(b.Bytes()))
	rects, paths := 0, 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			switch se.Name.Local {
			case "rect":
				rects++
			case "path":
				paths++
			}
		}
	}
	if paths < 3*3 || rects < 30 { // per panel: axes, size, target
		t.Errorf("%d paths and %d rects", paths, rects)
	}
	var tb bytes.Buffer
	PrintReplay(&tb, r)
	out := tb.String()
	// The table lists the modes none, fixed, forecast in that order.
	if i, j, k := strings.Index(out, "\nnone"), strings.Index(out, "\nfixed"), strings.Index(out, "\nforecast"); i < 0 || !(i < j && j < k) {
		t.Errorf("table order:\n%s", out)
	}
	if !strings.Contains(out, "error: start: boom") {
		t.Errorf("no error line:\n%s", out)
	}
}

func TestNiceCeil(t *testing.T) {
	for _, c := range [][2]float64{{0, 1}, {1, 1}, {3, 5}, {7, 10}, {12, 20}, {45, 50}, {51, 100}} {
		if got := niceCeil(c[0]); got != c[1] {
			t.Errorf("niceCeil(%v) = %v, want %v", c[0], got, c[1])
		}
	}
}

// fakeSkiff is an in-memory skiff with a warm pool: a create takes a
// prepared sandbox when there is one (fast) or builds one (slow); the pool
// refills to its target between reads of the hosts.
type fakeSkiff struct {
	mu           sync.Mutex
	class        string
	pool, target int
	hits, misses int64
	groups       map[string]*api.Group
	created      int
	n            int
}

func (f *fakeSkiff) Hosts(ctx context.Context) ([]api.Host, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pool = f.target // refilled
	return []api.Host{{ID: "h1", State: api.HostReady, Pool: &api.HostPool{UpdatedAt: time.Now(),
		Classes: []api.PoolClassStatus{{Class: f.class, Size: f.pool, Target: f.target, Hits: f.hits, Misses: f.misses}}}}}, nil
}

func (f *fakeSkiff) CreateGroup(ctx context.Context, req api.CreateGroupRequest) (*api.Group, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	f.created++
	now := time.Now()
	delay := 30 * time.Millisecond
	if f.pool > 0 {
		f.pool--
		f.hits++
		delay = 2 * time.Millisecond
	} else {
		f.misses++
	}
	run := now.Add(delay)
	g := &api.Group{ID: fmt.Sprintf("g%d", f.n), Name: req.Name, Status: api.StatusPending, CreatedAt: now, RunningAt: &run}
	f.groups[g.ID] = g
	c := *g
	return &c, true, nil
}

func (f *fakeSkiff) WaitAny(ctx context.Context, id string, _ []api.Status, _ time.Duration) (*api.Group, error) {
	f.mu.Lock()
	g := f.groups[id]
	f.mu.Unlock()
	if g == nil {
		return nil, fmt.Errorf("%s: not found", id)
	}
	time.Sleep(time.Until(*g.RunningAt))
	c := *g
	c.Status = api.StatusRunning
	return &c, nil
}

func (f *fakeSkiff) DeleteGroup(ctx context.Context, id string, force bool) (*api.Group, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.groups[id]
	delete(f.groups, id)
	return g, nil
}

type fakeLauncher struct {
	started []*fakeSkiff
}

func (l *fakeLauncher) Start(ctx context.Context, m ModeSpec) (Instance, error) {
	f := &fakeSkiff{class: m.Class, groups: map[string]*api.Group{}}
	switch m.Name {
	case ModeFixed:
		f.target = m.PoolSize
	case ModeForecast:
		f.target = 4
	}
	f.pool = f.target
	l.started = append(l.started, f)
	return fakeInstance{f}, nil
}

type fakeInstance struct{ f *fakeSkiff }

func (i fakeInstance) API() ReplayAPI { return i.f }
func (i fakeInstance) Stop(ctx context.Context) ([]string, error) {
	i.f.mu.Lock()
	defer i.f.mu.Unlock()
	var left []string
	for id := range i.f.groups {
		left = append(left, "group "+id)
	}
	return left, nil
}

// The driver against a fake skiff: each mode gets its own instance, the
// forecast plays every day and the others the last, every group is
// deleted, and the pool modes hit where no pool misses.
func TestReplayAgainstFakeSkiff(t *testing.T) {
	tr := TraceConfig{Seed: 3, Days: 2, Day: time.Second, BaseRate: 6, Scale: 1,
		Spikes:  []Spike{{At: 0.5, Size: 6, Width: 100 * time.Millisecond}},
		LifeMin: 50 * time.Millisecond, LifeMax: 200 * time.Millisecond}
	evs, err := GenerateTrace(tr)
	if err != nil {
		t.Fatal(err)
	}
	last := 0
	for _, e := range evs {
		if e.Day == tr.Days-1 {
			last++
		}
	}
	var log bytes.Buffer
	l := &fakeLauncher{}
	cfg := ReplayConfig{Trace: tr, CPU: 10, Memory: 8 << 20, FixedSize: 3, Sample: 20 * time.Millisecond, Settle: 10 * time.Millisecond, Log: &log}
	res, err := RunReplay(context.Background(), l, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Modes) != 3 || len(l.started) != 3 {
		t.Fatalf("%d modes, %d instances", len(res.Modes), len(l.started))
	}
	if res.Class != "c0.25" {
		t.Errorf("class %q", res.Class)
	}
	for i, m := range res.Modes {
		if m.Error != "" || len(m.Leaks) > 0 {
			t.Errorf("%s: error %q, leaks %v", m.Mode, m.Error, m.Leaks)
		}
		if m.Creates != last || m.Running != last {
			t.Errorf("%s: %d creates, %d running, want %d of the last day", m.Mode, m.Creates, m.Running, last)
		}
		want := last
		if m.Mode == ModeForecast {
			want = len(evs)
		}
		if got := l.started[i].created; got != want {
			t.Errorf("%s: the fake saw %d creates, want %d", m.Mode, got, want)
		}
		// The forecast's day boundary is fuzzy by a reading: a create of
		// the day before may be counted in the measured day.
		if d := m.Hits + m.Misses - int64(m.Creates); d < 0 || d > 2 || (m.Mode != ModeForecast && d != 0) {
			t.Errorf("%s: %d hits + %d misses for %d creates", m.Mode, m.Hits, m.Misses, m.Creates)
		}
	}
	if none := res.Modes[0]; none.Hits != 0 || none.MeanPoolSize != 0 {
		t.Errorf("none: %d hits, mean pool %v", none.Hits, none.MeanPoolSize)
	}
	if fixed := res.Modes[1]; fixed.Hits == 0 || fixed.MeanPoolSize == 0 || fixed.P50Ms >= res.Modes[0].P50Ms {
		t.Errorf("fixed: %d hits, mean pool %v, p50 %v vs none's %v", fixed.Hits, fixed.MeanPoolSize, fixed.P50Ms, res.Modes[0].P50Ms)
	}
	if !strings.Contains(log.String(), "mode forecast") {
		t.Errorf("log: %s", log.String())
	}
}
