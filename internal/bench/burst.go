// Package bench measures skiff from the outside: a burst of container
// groups created through the public API against a running skiff, timed
// from the first create call to the last group Running, side by side with
// a peer runtime (runc) starting the same number of containers of the same
// rootfs in the same run.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

// BurstConfig says what burst to run.
type BurstConfig struct {
	Count       int
	Concurrency int // batch-create calls in flight at once
	BatchSize   int // groups per batch-create call
	Image       string
	Command     []string
	CPU         api.CPU
	Memory      api.Quantity
	// Pool is "on" (the hosts' warm pool must hold the burst's shape
	// class; the burst waits for it to fill), "off" (the hosts must hold no
	// prepared sandbox: every start is cold) or "" (whatever the hosts
	// have). Hits and misses are counted in every case.
	Pool string
	// PoolWait bounds the wait for the pool to fill or drain (default 5m).
	PoolWait time.Duration
	Keep     bool
	Timeout  time.Duration
	// Peer, when set, starts Count containers of the same rootfs with that
	// runtime in the same run.
	Peer *PeerConfig
	// GetProbe is how often one single-group GET is timed during the burst.
	GetProbe time.Duration
	Log      io.Writer
}

// BurstResult is the machine-readable outcome.
type BurstResult struct {
	Count       int    `json:"count"`
	Concurrency int    `json:"concurrency"`
	BatchSize   int    `json:"batchSize"`
	Image       string `json:"image"`
	Pool        string `json:"pool"`
	// PoolClass is the shape class of the burst's groups; PoolHits and
	// PoolMisses count its creates that took a prepared sandbox or built
	// one (the hosts' pool counters, after minus before), and PoolSize is
	// how many prepared sandboxes of the class the hosts held before.
	PoolClass   string  `json:"poolClass,omitempty"`
	PoolHits    int64   `json:"poolHits"`
	PoolMisses  int64   `json:"poolMisses"`
	PoolHitRate float64 `json:"poolHitRate"`
	PoolSize    int     `json:"poolSizeBefore"`
	// PoolReported is false when the hosts report no warm pool at all.
	PoolReported      bool    `json:"poolReported"`
	AllRunningSeconds float64 `json:"allRunningSeconds"`
	CreateCallsSecond float64 `json:"createCallsSeconds"`
	GroupsPerSecond   float64 `json:"groupsPerSecond"`
	// Create→Running from the API's own status times (runningAt-createdAt).
	P50Ms float64 `json:"p50Ms"`
	P90Ms float64 `json:"p90Ms"`
	P99Ms float64 `json:"p99Ms"`
	// Create→Scheduled (scheduledAt-createdAt): the control plane's share.
	SchedP50Ms float64 `json:"schedP50Ms"`
	SchedP99Ms float64 `json:"schedP99Ms"`
	// The client's view: create call sent → Running seen on the watch.
	ClientP50Ms float64 `json:"clientP50Ms"`
	ClientP90Ms float64 `json:"clientP90Ms"`
	ClientP99Ms float64 `json:"clientP99Ms"`
	// A single-group GET timed during the burst.
	GetSamples int     `json:"getSamples"`
	GetP50Ms   float64 `json:"getP50Ms"`
	GetP99Ms   float64 `json:"getP99Ms"`
	// Host memory in use (MemTotal-MemAvailable) after all Running minus
	// before the first create, divided by Count. Only meaningful when the
	// bench runs on the (single) host that runs the groups.
	MemoryPerGroupBytes int64   `json:"memoryPerGroupBytes"`
	TeardownSeconds     float64 `json:"teardownSeconds,omitempty"`
	Kept                bool    `json:"kept,omitempty"`
	Failed              int     `json:"failed"`
	Peer                string  `json:"peer,omitempty"`
	PeerSeconds         float64 `json:"peerSeconds,omitempty"`
	PeerPerSecond       float64 `json:"peerPerSecond,omitempty"`
	PeerTeardownSeconds float64 `json:"peerTeardownSeconds,omitempty"`
	// Ratio is PeerSeconds / AllRunningSeconds: how many times faster skiff
	// brought the same number of containers up.
	Ratio float64 `json:"ratio,omitempty"`
	// Timeline, for the plot: per group, seconds from the first create call.
	Timeline []TimelinePoint `json:"timeline,omitempty"`
	// PeerTimeline: seconds from the peer's first start to each container up.
	PeerTimeline []float64 `json:"peerTimeline,omitempty"`
}

// TimelinePoint is one group's create-acknowledged and Running times.
type TimelinePoint struct {
	Created float64 `json:"created"`
	Running float64 `json:"running"`
}

type groupTrack struct {
	sent, acked, running        time.Time
	apiCreate, apiRun, apiSched time.Time
}

func (c *BurstConfig) logf(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, format+"\n", args...)
	}
}

// RunBurst runs one burst against the server cl talks to.
func RunBurst(ctx context.Context, cl *client.Client, cfg BurstConfig) (*BurstResult, error) {
	if cfg.Count <= 0 {
		return nil, errors.New("count must be positive")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 100
	}
	if cfg.BatchSize > 1000 {
		cfg.BatchSize = 1000
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.GetProbe <= 0 {
		cfg.GetProbe = 20 * time.Millisecond
	}
	if len(cfg.Command) == 0 {
		cfg.Command = []string{"sleep", "1000000"}
	}
	runID := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	labels := map[string]string{"skiff-bench": runID}
	res := &BurstResult{Count: cfg.Count, Concurrency: cfg.Concurrency, BatchSize: cfg.BatchSize, Image: cfg.Image, Pool: cfg.Pool}
	if res.Pool == "" {
		res.Pool = "server" // whatever the hosts' pool holds
	}
	res.PoolClass = burstClass(cfg)
	poolBefore, err := preparePool(ctx, cl, &cfg, res.PoolClass)
	if err != nil {
		return nil, err
	}
	res.PoolReported, res.PoolSize = poolBefore.Reported, poolBefore.ClassSize

	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	// Watch first, so no Running transition is missed.
	w, err := cl.Watch(ctx, client.WatchOptions{Labels: labels})
	if err != nil {
		return nil, fmt.Errorf("open watch: %w", err)
	}
	defer w.Close()

	var mu sync.Mutex
	byName := map[string]*groupTrack{}
	byID := map[string]*groupTrack{}
	names := make([]string, cfg.Count)
	reqs := make([]api.CreateGroupRequest, cfg.Count)
	for i := range reqs {
		names[i] = fmt.Sprintf("bench-%s-%d", runID, i)
		byName[names[i]] = &groupTrack{}
		reqs[i] = api.CreateGroupRequest{
			Name:   names[i],
			Labels: labels,
			Spec: api.GroupSpec{
				CPU:           cfg.CPU,
				Memory:        cfg.Memory,
				RestartPolicy: api.RestartNever,
				Containers: []api.Container{{
					Name: "c", Image: cfg.Image, Command: cfg.Command,
				}},
			},
		}
	}

	memBefore := memUsed()
	runningCh := make(chan struct{}, cfg.Count)
	failedCh := make(chan string, cfg.Count)
	watchDone := make(chan error, 1)
	go func() {
		seen := map[string]bool{}
		for w.Next() {
			ev := w.Event()
			g := ev.Group
			if g == nil || ev.Type == "DELETED" {
				continue
			}
			mu.Lock()
			t := byName[g.Name]
			if t != nil && byID[g.ID] == nil {
				byID[g.ID] = t
			}
			mu.Unlock()
			if t == nil || seen[g.Name] {
				continue
			}
			switch {
			case g.Status == api.StatusRunning:
				now := time.Now()
				seen[g.Name] = true
				mu.Lock()
				t.running = now
				t.apiCreate = g.CreatedAt
				if g.RunningAt != nil {
					t.apiRun = *g.RunningAt
				}
				if g.ScheduledAt != nil {
					t.apiSched = *g.ScheduledAt
				}
				mu.Unlock()
				runningCh <- struct{}{}
			case g.Status.Terminal() || g.Status == api.StatusScheduleFailed:
				seen[g.Name] = true
				failedCh <- fmt.Sprintf("%s: %s %s %s", g.Name, g.Status, g.Reason, g.Message)
			}
		}
		watchDone <- w.Err()
	}()

	// Time a single GET now and then while the burst runs.
	probeStop := make(chan struct{})
	var getLat []float64
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		tk := time.NewTicker(cfg.GetProbe)
		defer tk.Stop()
		for {
			select {
			case <-probeStop:
				return
			case <-tk.C:
			}
			name := names[len(getLat)%len(names)]
			t0 := time.Now()
			_, err := cl.GetGroup(ctx, name)
			if err == nil || client.IsNotFound(err) {
				getLat = append(getLat, float64(time.Since(t0).Microseconds())/1000)
			}
		}
	}()

	cfg.logf("burst %s: %d groups of %s, batches of %d, %d in flight", runID, cfg.Count, cfg.Image, cfg.BatchSize, cfg.Concurrency)
	start := time.Now()
	batches := make(chan []int, cfg.Count/cfg.BatchSize+1)
	for i := 0; i < cfg.Count; i += cfg.BatchSize {
		idx := make([]int, 0, cfg.BatchSize)
		for j := i; j < min(i+cfg.BatchSize, cfg.Count); j++ {
			idx = append(idx, j)
		}
		batches <- idx
	}
	close(batches)
	var createErr error
	var createErrOnce sync.Once
	failedCreates := 0
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for idx := range batches {
				items := make([]api.CreateGroupRequest, len(idx))
				sent := time.Now()
				mu.Lock()
				for k, i := range idx {
					items[k] = reqs[i]
					byName[names[i]].sent = sent
				}
				mu.Unlock()
				out, err := cl.CreateGroups(ctx, items)
				acked := time.Now()
				if err != nil {
					createErrOnce.Do(func() { createErr = err })
					continue
				}
				mu.Lock()
				for k, r := range out.Items {
					t := byName[names[idx[k]]]
					t.acked = acked
					if r.Error != nil {
						failedCreates++
						createErrOnce.Do(func() { createErr = fmt.Errorf("create %s: %s (%s)", names[idx[k]], r.Error.Message, r.Error.Code) })
					} else if r.Group != nil {
						byID[r.Group.ID] = t
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	callsDone := time.Since(start)
	res.CreateCallsSecond = callsDone.Seconds()
	cfg.logf("create calls done in %.2fs", callsDone.Seconds())

	want := cfg.Count - failedCreates
	running, failed := 0, 0
	var firstFail string
	lastLog := time.Now()
	for running+failed < want {
		select {
		case <-runningCh:
			running++
		case f := <-failedCh:
			failed++
			if firstFail == "" {
				firstFail = f
			}
		case err := <-watchDone:
			if err == nil {
				err = errors.New("watch stream ended")
			}
			return nil, fmt.Errorf("after %d of %d Running: %w", running, want, err)
		case <-ctx.Done():
			close(probeStop)
			return nil, fmt.Errorf("%d of %d Running after %s (first failure: %s; create error: %v)", running, want, cfg.Timeout, firstFail, createErr)
		}
		if time.Since(lastLog) > 2*time.Second {
			cfg.logf("  %d Running, %d failed, %.1fs", running, failed, time.Since(start).Seconds())
			lastLog = time.Now()
		}
	}
	all := time.Since(start)
	close(probeStop)
	<-probeDone
	memAfter := memUsed()
	res.AllRunningSeconds = all.Seconds()
	res.GroupsPerSecond = float64(running) / all.Seconds()
	res.Failed = failed + failedCreates
	if memBefore > 0 && memAfter > 0 && running > 0 {
		res.MemoryPerGroupBytes = (memAfter - memBefore) / int64(running)
	}
	cfg.logf("all %d Running in %.2fs (%d failed)", running, all.Seconds(), res.Failed)
	if firstFail != "" {
		cfg.logf("first failure: %s", firstFail)
	}
	if createErr != nil {
		cfg.logf("create error: %v", createErr)
	}

	var apiLat, cliLat, schedLat []float64
	mu.Lock()
	for _, n := range names {
		t := byName[n]
		if t.running.IsZero() {
			continue
		}
		if !t.apiRun.IsZero() {
			apiLat = append(apiLat, float64(t.apiRun.Sub(t.apiCreate).Microseconds())/1000)
		}
		if !t.apiSched.IsZero() {
			schedLat = append(schedLat, float64(t.apiSched.Sub(t.apiCreate).Microseconds())/1000)
		}
		cliLat = append(cliLat, float64(t.running.Sub(t.sent).Microseconds())/1000)
		tp := TimelinePoint{Running: t.running.Sub(start).Seconds()}
		if !t.acked.IsZero() {
			tp.Created = t.acked.Sub(start).Seconds()
		}
		res.Timeline = append(res.Timeline, tp)
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	mu.Unlock()
	res.P50Ms, res.P90Ms, res.P99Ms = percentile(apiLat, 50), percentile(apiLat, 90), percentile(apiLat, 99)
	res.ClientP50Ms, res.ClientP90Ms, res.ClientP99Ms = percentile(cliLat, 50), percentile(cliLat, 90), percentile(cliLat, 99)
	res.SchedP50Ms, res.SchedP99Ms = percentile(schedLat, 50), percentile(schedLat, 99)
	res.GetSamples = len(getLat)
	res.GetP50Ms, res.GetP99Ms = percentile(getLat, 50), percentile(getLat, 99)

	if res.PoolReported {
		h, m, err := countPoolHits(ctx, cl, poolBefore, res.PoolClass, running+failed, start.Add(all))
		if err != nil {
			cfg.logf("pool hits: %v", err)
		}
		res.PoolHits, res.PoolMisses = h, m
		if h+m > 0 {
			res.PoolHitRate = float64(h) / float64(h+m)
		}
		cfg.logf("warm pool: %d hits, %d misses (class %s)", h, m, res.PoolClass)
		if cfg.Pool == "off" && h > 0 {
			cfg.logf("warning: --pool off, yet %d creates took a prepared sandbox (the pool was refilled during the burst)", h)
		}
	}

	if cfg.Keep {
		res.Kept = true
	} else {
		d, err := teardown(ctx, cl, labels, ids, cfg)
		if err != nil {
			return res, fmt.Errorf("teardown: %w", err)
		}
		res.TeardownSeconds = d.Seconds()
		cfg.logf("teardown of %d groups in %.2fs", len(ids), d.Seconds())
	}

	if running == 0 { // after the teardown: nothing is left behind
		return res, fmt.Errorf("no group reached Running (first failure: %s; create error: %v)", firstFail, createErr)
	}
	if cfg.Peer != nil && res.Failed > 0 {
		cfg.logf("peer skipped: %d of %d groups failed, so there is no fair comparison", res.Failed, cfg.Count)
	} else if cfg.Peer != nil {
		pr, err := RunPeer(ctx, *cfg.Peer, cfg.Count, cfg.logf)
		if err != nil {
			return res, fmt.Errorf("peer %s: %w", cfg.Peer.Runtime, err)
		}
		res.Peer = cfg.Peer.Runtime
		res.PeerSeconds = pr.Seconds
		res.PeerPerSecond = float64(cfg.Count) / pr.Seconds
		res.PeerTeardownSeconds = pr.TeardownSeconds
		res.PeerTimeline = pr.Timeline
		if res.AllRunningSeconds > 0 {
			res.Ratio = pr.Seconds / res.AllRunningSeconds
		}
	}
	return res, nil
}

// teardownConcurrency is how many deletes the teardown keeps in flight.
var teardownConcurrency = 64

// teardown deletes the groups (force) and waits until the store has none
// of them left; the agent has removed their sandboxes by then.
func teardown(ctx context.Context, cl *client.Client, labels map[string]string, ids []string, cfg BurstConfig) (time.Duration, error) {
	start := time.Now()
	work := make(chan string, len(ids))
	for _, id := range ids {
		work <- id
	}
	close(work)
	var wg sync.WaitGroup
	var firstErr error
	var once sync.Once
	// Deletes are one call per group (as a user's would be); etcd commits
	// concurrent ones together, so many in flight cost little more than one.
	for range max(cfg.Concurrency, teardownConcurrency) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				if _, err := cl.DeleteGroup(ctx, id, true); err != nil && !client.IsNotFound(err) {
					once.Do(func() { firstErr = err })
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	// Poll the list: the watch goroutine is still draining events.
	for {
		l, err := cl.ListGroups(ctx, client.ListOptions{Labels: labels, All: true, Limit: 1})
		if err == nil && l.Total == 0 {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			n := -1
			if l != nil {
				n = l.Total
			}
			return 0, fmt.Errorf("%d groups left: %w", n, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// percentile of xs (nearest rank); 0 for none.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	k := int(float64(len(s))*p/100+0.999999) - 1
	k = max(0, min(k, len(s)-1))
	return s[k]
}

// memUsed is MemTotal-MemAvailable in bytes; 0 when unknown.
func memUsed() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	var total, avail int64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "MemTotal:":
			total = v << 10
		case "MemAvailable:":
			avail = v << 10
		}
	}
	return total - avail
}

// HTTPClient is a client fit for a burst: enough idle connections for the
// concurrency, so calls do not queue on a dial.
func HTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 256
	tr.MaxIdleConnsPerHost = 256
	return &http.Client{Transport: tr}
}
