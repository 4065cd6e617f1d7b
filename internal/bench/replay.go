package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/skiffhq/skiff/api"
)

// The replay benchmark plays a synthetic daily trace (trace.go) against a
// fresh skiff per pool mode and compares how the modes serve the last,
// measured day:
//
//	none      no warm pool: every start is cold
//	fixed     a constant pool, sized the way an operator would size it
//	          without a forecast: the trace's mean create rate × a window
//	forecast  the control plane's forecast sets the pool targets; the
//	          earlier days of the trace are its history
//
// Only the forecast mode needs the training days (the others learn
// nothing), so the none and fixed modes replay the measured day alone;
// that keeps a default run near ten minutes.

// Pool modes.
const (
	ModeNone     = "none"
	ModeFixed    = "fixed"
	ModeForecast = "forecast"
)

// ReplayAPI is what the replay needs of a running skiff.
type ReplayAPI interface {
	HostLister
	CreateGroup(ctx context.Context, req api.CreateGroupRequest) (*api.Group, bool, error)
	WaitAny(ctx context.Context, idOrName string, statuses []api.Status, timeout time.Duration) (*api.Group, error)
	DeleteGroup(ctx context.Context, idOrName string, force bool) (*api.Group, error)
}

// ModeSpec is what a launcher needs to start a skiff for one mode.
type ModeSpec struct {
	Name string
	// Class is the shape class of the trace's groups.
	Class string
	// PoolSize is the fixed pool's target (mode fixed).
	PoolSize int
	// Bucket and Season configure the forecaster (mode forecast): the
	// history's bucket width and the number of buckets in a day.
	Bucket time.Duration
	Season int
}

// Launcher starts a fresh skiff for a mode.
type Launcher interface {
	Start(ctx context.Context, m ModeSpec) (Instance, error)
}

// Instance is one running skiff.
type Instance interface {
	API() ReplayAPI
	// Stop deletes what is left, stops skiff and checks that it left
	// nothing on the machine; leaks lists what it found (and removed).
	Stop(ctx context.Context) (leaks []string, err error)
}

// ReplayConfig says what replay to run.
type ReplayConfig struct {
	Trace TraceConfig
	Modes []string
	Image string
	CPU   api.CPU
	// Memory per group; with CPU it picks the shape class.
	Memory api.Quantity
	// FixedSize is the fixed pool's target; 0: ceil(mean rate × FixedWindow).
	FixedSize   int
	FixedWindow time.Duration
	// Bucket is the forecaster's bucket width (default 1s); the season is
	// the day length in buckets.
	Bucket time.Duration
	// Sample is how often the hosts' pool is read (default 1s); Settle
	// how long to wait after the last create for the hosts' last pool
	// report (default 4.5s: they report every two seconds).
	Sample, Settle time.Duration
	// StartTimeout bounds one create's wait for Running (default 60s).
	StartTimeout time.Duration
	// PoolFillTimeout bounds the wait for the fixed pool to fill before
	// the replay starts (default 2m).
	PoolFillTimeout time.Duration
	Log             io.Writer
}

// ReplayResult is the machine-readable outcome.
type ReplayResult struct {
	Seed         int64        `json:"seed"`
	Days         int          `json:"days"`
	DaySeconds   float64      `json:"daySeconds"`
	Scale        float64      `json:"scale"`
	BaseRate     float64      `json:"baseRate"`
	MeanRate     float64      `json:"meanRatePerSecond"`
	Spikes       []Spike      `json:"spikes"`
	Class        string       `json:"class"`
	Image        string       `json:"image"`
	TraceCreates int          `json:"traceCreates"`
	DayCreates   []int        `json:"dayCreates"`
	BucketSecs   float64      `json:"bucketSeconds"`
	Modes        []ModeResult `json:"modes"`
}

// ModeResult is how one mode served the measured day.
type ModeResult struct {
	Mode string `json:"mode"`
	// Setup says how the pool was configured, in words.
	Setup   string `json:"setup"`
	Creates int    `json:"creates"`
	Running int    `json:"running"`
	Failed  int    `json:"failed"`
	// Hits and Misses: the hosts' pool counters over the measured day.
	Hits    int64   `json:"hits"`
	Misses  int64   `json:"misses"`
	HitRate float64 `json:"hitRate"`
	// Create→Running from the API's status times.
	P50Ms float64 `json:"p50Ms"`
	P90Ms float64 `json:"p90Ms"`
	P99Ms float64 `json:"p99Ms"`
	// Within the spikes' windows only.
	SpikeP99Ms float64 `json:"spikeP99Ms"`
	// The client's view: create call sent → Running seen.
	ClientP99Ms float64 `json:"clientP99Ms"`
	// The cost: prepared sandboxes held idle, on average and at most,
	// over the measured day; and the mean target.
	MeanPoolSize   float64  `json:"meanPoolSize"`
	MaxPoolSize    int      `json:"maxPoolSize"`
	MeanPoolTarget float64  `json:"meanPoolTarget"`
	PoolReported   bool     `json:"poolReported"`
	Seconds        float64  `json:"seconds"`
	Leaks          []string `json:"leaks,omitempty"`
	Error          string   `json:"error,omitempty"`
	// Series, per bucket of the measured day.
	Series []ReplayBucket `json:"series,omitempty"`
}

// ReplayBucket is one bucket of the measured day.
type ReplayBucket struct {
	T        float64 `json:"t"` // seconds from the measured day's start
	Demand   int     `json:"demand"`
	PoolSize float64 `json:"poolSize"`
	Target   float64 `json:"target"`
	Hits     int64   `json:"hits"`
	Misses   int64   `json:"misses"`
}

// createRecord is one create of the replay.
type createRecord struct {
	ev                   TraceEvent
	sent, seen           time.Time
	apiCreated, apiRun   time.Time
	running, failed, err bool
}

func (c *ReplayConfig) logf(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, format+"\n", args...)
	}
}

func (c *ReplayConfig) defaults() {
	if c.FixedWindow <= 0 {
		c.FixedWindow = 5 * time.Second
	}
	if c.Bucket <= 0 {
		c.Bucket = time.Second
	}
	if c.Sample <= 0 {
		c.Sample = time.Second
	}
	if c.Settle <= 0 {
		c.Settle = 4500 * time.Millisecond
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = 60 * time.Second
	}
	if c.PoolFillTimeout <= 0 {
		c.PoolFillTimeout = 2 * time.Minute
	}
	if len(c.Modes) == 0 {
		c.Modes = []string{ModeNone, ModeFixed, ModeForecast}
	}
	if c.Image == "" {
		c.Image = "busybox"
	}
}

// FixedPoolSize is the fixed mode's target: what an operator without a
// forecast would pick, the mean create rate times a window (the time a
// pool has to refill), at least 1.
func FixedPoolSize(t TraceConfig, window time.Duration) int {
	return max(1, int(math.Ceil(t.MeanRate()*window.Seconds())))
}

// RunReplay replays the trace once per mode, each against a fresh skiff
// from l.
func RunReplay(ctx context.Context, l Launcher, cfg ReplayConfig) (*ReplayResult, error) {
	cfg.defaults()
	events, err := GenerateTrace(cfg.Trace)
	if err != nil {
		return nil, err
	}
	if cfg.Trace.Day%cfg.Bucket != 0 {
		return nil, fmt.Errorf("the day (%s) must be a whole number of forecast buckets (%s)", cfg.Trace.Day, cfg.Bucket)
	}
	spec := api.GroupSpec{CPU: cfg.CPU, Memory: cfg.Memory, Containers: []api.Container{{Name: "c", Image: cfg.Image}}}
	class := api.ShapeClassOf(spec.Requests())
	if class == "" {
		return nil, fmt.Errorf("groups of %s vCPU and %s fit no shape class: no pool could serve them", cfg.CPU, cfg.Memory)
	}
	res := &ReplayResult{Seed: cfg.Trace.Seed, Days: cfg.Trace.Days, DaySeconds: cfg.Trace.Day.Seconds(), Scale: cfg.Trace.Scale,
		BaseRate: cfg.Trace.BaseRate, MeanRate: cfg.Trace.MeanRate(), Spikes: cfg.Trace.Spikes, Class: class, Image: cfg.Image,
		TraceCreates: len(events), DayCreates: make([]int, cfg.Trace.Days), BucketSecs: bucketWidth(cfg.Trace.Day).Seconds()}
	for _, e := range events {
		res.DayCreates[e.Day]++
	}
	cfg.logf("trace: seed %d, %d days of %s, %d creates (%v per day), mean %.2f creates/s, class %s",
		cfg.Trace.Seed, cfg.Trace.Days, cfg.Trace.Day, len(events), res.DayCreates, res.MeanRate, class)
	for _, mode := range cfg.Modes {
		ms := ModeSpec{Name: mode, Class: class}
		switch mode {
		case ModeNone:
		case ModeFixed:
			ms.PoolSize = cfg.FixedSize
			if ms.PoolSize <= 0 {
				ms.PoolSize = FixedPoolSize(cfg.Trace, cfg.FixedWindow)
			}
		case ModeForecast:
			ms.Bucket = cfg.Bucket
			ms.Season = int(cfg.Trace.Day / cfg.Bucket)
		default:
			return nil, fmt.Errorf("unknown mode %q: want none, fixed or forecast", mode)
		}
		mr := runMode(ctx, l, cfg, ms, events)
		res.Modes = append(res.Modes, mr)
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
	}
	return res, nil
}

// setupText says how a mode's pool was configured.
func setupText(cfg ReplayConfig, ms ModeSpec) string {
	switch ms.Name {
	case ModeFixed:
		if cfg.FixedSize > 0 {
			return fmt.Sprintf("fixed pool of %d %s sandboxes (--fixed-size)", ms.PoolSize, ms.Class)
		}
		return fmt.Sprintf("fixed pool of %d %s sandboxes = ceil(mean %.2f creates/s × %s)", ms.PoolSize, ms.Class, cfg.Trace.MeanRate(), cfg.FixedWindow)
	case ModeForecast:
		return fmt.Sprintf("forecast-driven targets: %s buckets, season %d buckets; %d training day(s) first", ms.Bucket, ms.Season, cfg.Trace.Days-1)
	}
	return "no warm pool"
}

func runMode(ctx context.Context, l Launcher, cfg ReplayConfig, ms ModeSpec, events []TraceEvent) (mr ModeResult) {
	mr = ModeResult{Mode: ms.Name, Setup: setupText(cfg, ms)}
	began := time.Now()
	defer func() { mr.Seconds = time.Since(began).Seconds() }()
	cfg.logf("mode %s: %s", ms.Name, mr.Setup)
	inst, err := l.Start(ctx, ms)
	if err != nil {
		mr.Error = "start: " + err.Error()
		cfg.logf("mode %s: %s", ms.Name, mr.Error)
		return mr
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
		defer cancel()
		leaks, err := inst.Stop(stopCtx)
		mr.Leaks = leaks
		if err != nil && mr.Error == "" {
			mr.Error = "stop: " + err.Error()
		}
		if len(leaks) > 0 {
			cfg.logf("mode %s: left behind (removed): %v", ms.Name, leaks)
		} else if err == nil {
			cfg.logf("mode %s: stopped, nothing left behind", ms.Name)
		}
	}()
	a := inst.API()
	if err := waitPoolFor(ctx, a, cfg, ms); err != nil {
		mr.Error = err.Error()
		cfg.logf("mode %s: %s", ms.Name, mr.Error)
		return mr
	}

	// The trace's part to play: every day for the forecast (its
	// history), the measured day alone for the others.
	measured := cfg.Trace.Days - 1
	first := 0
	if ms.Name != ModeForecast {
		first = measured
	}
	var play []TraceEvent
	for _, e := range events {
		if e.Day >= first {
			play = append(play, e)
		}
	}
	dayStart := time.Duration(first) * cfg.Trace.Day
	mStart := time.Duration(measured) * cfg.Trace.Day // trace time

	// Sample the pool until the end.
	var smu sync.Mutex
	var samples []PoolSnapshot
	sampleStop := make(chan struct{})
	sampleDone := make(chan struct{})
	go func() {
		defer close(sampleDone)
		tk := time.NewTicker(cfg.Sample)
		defer tk.Stop()
		for {
			if s, err := ReadPool(ctx, a, ms.Class); err == nil {
				smu.Lock()
				samples = append(samples, s)
				smu.Unlock()
			}
			select {
			case <-sampleStop:
				return
			case <-ctx.Done():
				return
			case <-tk.C:
			}
		}
	}()

	t0 := time.Now().Add(500 * time.Millisecond) // trace time dayStart happens at t0
	realAt := func(at time.Duration) time.Time { return t0.Add(at - dayStart) }
	runID := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	recs := make([]*createRecord, len(play))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	lastLog := time.Now()
	for i, e := range play {
		if d := time.Until(realAt(e.At)); d > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
		if ctx.Err() != nil {
			break
		}
		if time.Since(lastLog) > 10*time.Second {
			day := e.At / cfg.Trace.Day
			phase := float64(e.At%cfg.Trace.Day) / float64(cfg.Trace.Day)
			smu.Lock()
			var ps PoolSnapshot
			if len(samples) > 0 {
				ps = samples[len(samples)-1]
			}
			smu.Unlock()
			cfg.logf("  %s: day %d %02d:%02d, %d of %d creates sent; pool %d (target %d), %d hits, %d misses so far",
				ms.Name, day, int(phase*24), int(phase*24*60)%60, i, len(play), ps.Size, ps.Target, ps.Hits, ps.Misses)
			lastLog = time.Now()
		}
		r := &createRecord{ev: e}
		recs[i] = r
		sem <- struct{}{}
		wg.Add(1)
		go func(name string) {
			defer wg.Done()
			defer func() { <-sem }()
			playOne(ctx, a, cfg, name, r, realAt(e.At+e.Life))
		}(fmt.Sprintf("replay-%s-%s-%d", runID, ms.Name, i))
	}
	wg.Wait()
	// One more pool report after the last create.
	select { // the agents report every two seconds
	case <-ctx.Done():
	case <-time.After(cfg.Settle):
	}
	if s, err := ReadPool(ctx, a, ms.Class); err == nil {
		smu.Lock()
		samples = append(samples, s)
		smu.Unlock()
	}
	close(sampleStop)
	<-sampleDone
	summarize(&mr, cfg, recs, samples, realAt(mStart), mStart)
	cfg.logf("mode %s: %d creates, %d Running, %d failed; %d hits, %d misses (%.0f%%); p50 %.0f ms, p99 %.0f ms; mean pool %.1f",
		ms.Name, mr.Creates, mr.Running, mr.Failed, mr.Hits, mr.Misses, 100*mr.HitRate, mr.P50Ms, mr.P99Ms, mr.MeanPoolSize)
	return mr
}

// waitPoolFor waits until the hosts' pool is what the mode starts from: a
// filled fixed pool, or no pool at all for none.
func waitPoolFor(ctx context.Context, a ReplayAPI, cfg ReplayConfig, ms ModeSpec) error {
	deadline := time.Now().Add(cfg.PoolFillTimeout)
	lastLog := time.Now()
	for {
		s, err := ReadPool(ctx, a, ms.Class)
		if err != nil {
			return fmt.Errorf("read the hosts' pool: %w", err)
		}
		switch ms.Name {
		case ModeFixed:
			if !s.Reported && time.Now().After(deadline) {
				return errors.New("no host reports a warm pool (GET /v1/hosts has none): this skiff, or its runtime, has no pool")
			}
			if s.Reported && s.ClassSize >= ms.PoolSize {
				cfg.logf("mode %s: pool filled: %d of class %s", ms.Name, s.ClassSize, ms.Class)
				return nil
			}
			if time.Since(lastLog) > 3*time.Second {
				cfg.logf("mode %s: pool filling: %d of %d", ms.Name, s.ClassSize, ms.PoolSize)
				lastLog = time.Now()
			}
		case ModeNone:
			if s.Size == 0 {
				return nil
			}
		default:
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the pool holds %d sandboxes of class %s after %s (mode %s wants %d)", s.ClassSize, ms.Class, cfg.PoolFillTimeout, ms.Name, ms.PoolSize)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// playOne creates one group, waits for it to run, keeps it until its
// lifetime is over, then deletes it.
func playOne(ctx context.Context, a ReplayAPI, cfg ReplayConfig, name string, r *createRecord, deleteAt time.Time) {
	req := api.CreateGroupRequest{
		Name:   name,
		Labels: map[string]string{"skiff-bench": "replay"},
		Spec: api.GroupSpec{
			CPU: cfg.CPU, Memory: cfg.Memory, RestartPolicy: api.RestartNever,
			Containers: []api.Container{{Name: "c", Image: cfg.Image, Command: []string{"sleep", "3600"}}},
		},
	}
	r.sent = time.Now()
	g, _, err := a.CreateGroup(ctx, req)
	if err != nil {
		r.err = true
		return
	}
	id := g.ID
	defer func() {
		if d := time.Until(deleteAt); d > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
		delCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, _ = a.DeleteGroup(delCtx, id, true)
	}()
	g, err = a.WaitAny(ctx, id, []api.Status{api.StatusRunning, api.StatusFailed, api.StatusSucceeded, api.StatusScheduleFailed, api.StatusExpired}, cfg.StartTimeout)
	r.seen = time.Now()
	if err != nil || g == nil {
		r.failed = true
		return
	}
	r.apiCreated = g.CreatedAt
	if g.Status == api.StatusRunning && g.RunningAt != nil {
		r.running = true
		r.apiRun = *g.RunningAt
	} else if g.RunningAt != nil { // ran and already ended
		r.running = true
		r.apiRun = *g.RunningAt
	} else {
		r.failed = true
	}
}

// bucketWidth is the plot's bucket: a sixtieth of a day, at least 2s (the
// agents report their pool every two seconds).
func bucketWidth(day time.Duration) time.Duration {
	return max(day/60, 2*time.Second).Truncate(time.Second)
}

// summarize fills mr from the creates and the pool samples of the
// measured day, which starts at mReal (real time) and trace time mStart.
func summarize(mr *ModeResult, cfg ReplayConfig, recs []*createRecord, samples []PoolSnapshot, mReal time.Time, mStart time.Duration) {
	var lat, spikeLat, cli []float64
	bw := bucketWidth(cfg.Trace.Day)
	nb := int((cfg.Trace.Day + bw - 1) / bw)
	series := make([]ReplayBucket, nb)
	for i := range series {
		series[i].T = (time.Duration(i) * bw).Seconds()
	}
	inSpike := func(at time.Duration) bool {
		ph := at % cfg.Trace.Day
		for _, s := range cfg.Trace.Spikes {
			st := time.Duration(s.At * float64(cfg.Trace.Day))
			if ph >= st && ph < st+s.Width+2*time.Second {
				return true
			}
		}
		return false
	}
	for _, r := range recs {
		if r == nil || r.ev.At < mStart {
			continue
		}
		mr.Creates++
		if b := int((r.ev.At - mStart) / bw); b >= 0 && b < nb {
			series[b].Demand++
		}
		switch {
		case r.running:
			mr.Running++
			ms := float64(r.apiRun.Sub(r.apiCreated).Microseconds()) / 1000
			lat = append(lat, ms)
			if inSpike(r.ev.At) {
				spikeLat = append(spikeLat, ms)
			}
			cli = append(cli, float64(r.seen.Sub(r.sent).Microseconds())/1000)
		default:
			mr.Failed++
		}
	}
	mr.P50Ms, mr.P90Ms, mr.P99Ms = percentile(lat, 50), percentile(lat, 90), percentile(lat, 99)
	mr.SpikeP99Ms = percentile(spikeLat, 99)
	mr.ClientP99Ms = percentile(cli, 99)

	// The pool: counters from the last reading before the measured day
	// to the last one; sizes over the day as read. The hosts' reports
	// change (and their UpdatedAt moves) only when the pool does, so a
	// change of the counters is placed at its report's time.
	var before *PoolSnapshot
	var sizeSum, targetSum float64
	var n int
	var prev *PoolSnapshot
	seen := make([]bool, nb)
	clampBucket := func(t time.Time) int {
		return max(0, min(int(t.Sub(mReal)/bw), nb-1))
	}
	for i := range samples {
		s := &samples[i]
		if s.Reported {
			mr.PoolReported = true
		}
		if s.At.Before(mReal) {
			before, prev = s, s
			continue
		}
		sizeSum += float64(s.Size)
		targetSum += float64(s.Target)
		n++
		mr.MaxPoolSize = max(mr.MaxPoolSize, s.Size)
		if prev != nil {
			h, m := poolDelta(*prev, *s)
			at := s.NewestReport
			if at.IsZero() || at.After(s.At) {
				at = s.At
			}
			b := clampBucket(at)
			series[b].Hits += h
			series[b].Misses += m
		}
		b := clampBucket(s.At)
		seen[b] = true
		series[b].PoolSize = math.Max(series[b].PoolSize, float64(s.Size)) // the bucket's peak
		series[b].Target = math.Max(series[b].Target, float64(s.Target))
		prev = s
	}
	if n > 0 {
		mr.MeanPoolSize = sizeSum / float64(n)
		mr.MeanPoolTarget = targetSum / float64(n)
	}
	if len(samples) > 0 {
		last := samples[len(samples)-1]
		base := PoolSnapshot{}
		if before != nil {
			base = *before
		}
		mr.Hits, mr.Misses = poolDelta(base, last)
	}
	if mr.Hits+mr.Misses > 0 {
		mr.HitRate = float64(mr.Hits) / float64(mr.Hits+mr.Misses)
	}
	// A bucket no reading fell in keeps the pool size of the one before.
	for i := 1; i < nb; i++ {
		if !seen[i] {
			series[i].PoolSize, series[i].Target = series[i-1].PoolSize, series[i-1].Target
		}
	}
	mr.Series = series
}

// sortedModes is the modes of r in the order none, fixed, forecast.
func sortedModes(r *ReplayResult) []ModeResult {
	order := map[string]int{ModeNone: 0, ModeFixed: 1, ModeForecast: 2}
	out := append([]ModeResult(nil), r.Modes...)
	sort.SliceStable(out, func(i, j int) bool { return order[out[i].Mode] < order[out[j].Mode] })
	return out
}
