package agent

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/sandbox"
)

// poolManager keeps the host's warm pool at its targets: per shape class,
// it prepares sandboxes (sandbox.Pool) while the pool holds fewer than the
// target and drains the extra when it holds more.
//
// Refilling never competes with live work: it prepares one sandbox at a
// time, and only once no create has been in flight for a quiet period, so
// a burst of creates runs on the whole machine and the pool refills in the
// gaps. The pool itself is the runtime's durable state: the manager keeps
// only counters, and after a crash it finds the prepared sandboxes again
// through PoolStats. A clean stop drains the pool (drainOnStop): a stopped
// agent holds no idle IPs, veths or cgroups, and the next start refills in
// the background.
type poolManager struct {
	pool  sandbox.Pool
	log   *slog.Logger
	fixed api.PoolTargets // --pool-size: the agent's own floor per class
	quiet time.Duration   // no refill until creates have been idle this long

	mu sync.Mutex
	// server is the control plane's target per class; nil until the first
	// one arrived (no draining before that: an agent restart must not
	// throw away a pool the server still wants).
	server     api.PoolTargets
	inflight   int
	lastCreate time.Time
	counts     map[string]*poolCounts

	wake chan struct{}
	done chan struct{} // closed when run returned

	prepareSeconds prometheus.Histogram
	hits, misses   *prometheus.CounterVec
	prepared       *prometheus.CounterVec
	failures       *prometheus.CounterVec
}

type poolCounts struct{ hits, misses, prepared int64 }

// maxPoolTarget bounds one class's target, whoever sets it.
const maxPoolTarget = 100000

func newPoolManager(pool sandbox.Pool, fixed api.PoolTargets, log *slog.Logger) *poolManager {
	m := &poolManager{pool: pool, log: log, fixed: fixed, quiet: 200 * time.Millisecond,
		counts: map[string]*poolCounts{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	m.prepareSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "skiff_pool_prepare_seconds",
		Help: "Time to prepare one warm-pool sandbox.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)})
	m.hits = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "skiff_pool_hits_total",
		Help: "Creates that took a prepared sandbox, per shape class."}, []string{"class"})
	m.misses = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "skiff_pool_misses_total",
		Help: "Creates that built their sandbox from scratch, per shape class."}, []string{"class"})
	m.prepared = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "skiff_pool_prepared_total",
		Help: "Sandboxes prepared for the warm pool (rate() of it is the refill rate), per shape class."}, []string{"class"})
	m.failures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "skiff_pool_prepare_failures_total",
		Help: "Failed warm-pool prepares, per shape class."}, []string{"class"})
	return m
}

// register adds the pool's metrics to reg.
func (m *poolManager) register(reg prometheus.Registerer) {
	reg.MustRegister(m.prepareSeconds, m.hits, m.misses, m.prepared, m.failures, poolGauges{m})
}

// poolGauges reports size and target per class at scrape time.
type poolGauges struct{ m *poolManager }

var (
	poolSizeDesc   = prometheus.NewDesc("skiff_pool_size", "Prepared sandboxes held in the warm pool, per shape class.", []string{"class"}, nil)
	poolTargetDesc = prometheus.NewDesc("skiff_pool_target", "Warm-pool target, per shape class.", []string{"class"}, nil)
)

func (g poolGauges) Describe(ch chan<- *prometheus.Desc) { ch <- poolSizeDesc; ch <- poolTargetDesc }
func (g poolGauges) Collect(ch chan<- prometheus.Metric) {
	for _, c := range g.m.status() {
		ch <- prometheus.MustNewConstMetric(poolSizeDesc, prometheus.GaugeValue, float64(c.Size), c.Class)
		ch <- prometheus.MustNewConstMetric(poolTargetDesc, prometheus.GaugeValue, float64(c.Target), c.Class)
	}
}

// setServerTargets records the control plane's targets and wakes the
// refill loop. It reports whether they changed.
func (m *poolManager) setServerTargets(t api.PoolTargets) bool {
	clean := api.PoolTargets{}
	for k, v := range t {
		if _, ok := api.LookupShapeClass(k); ok && v > 0 {
			clean[k] = min(v, maxPoolTarget)
		}
	}
	m.mu.Lock()
	changed := m.server == nil || m.server.String() != clean.String()
	m.server = clean
	m.mu.Unlock()
	if changed {
		m.poke()
	}
	return changed
}

func (m *poolManager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// targets returns the effective target per class and whether the server's
// targets are known yet.
func (m *poolManager) targets() (api.PoolTargets, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := api.PoolTargets{}
	for k, v := range m.server {
		out[k] = v
	}
	for k, v := range m.fixed {
		out[k] = max(out[k], v)
	}
	return out, m.server != nil
}

// beginCreate marks a create in flight and returns the pool class it
// should ask for ("" when the group fits no class). done records the
// outcome and lets the refill loop go on once creates are idle.
func (m *poolManager) beginCreate(r api.Resources) (class string, done func(fromPool bool)) {
	class = api.ShapeClassOf(r)
	m.mu.Lock()
	m.inflight++
	m.lastCreate = time.Now()
	m.mu.Unlock()
	return class, func(fromPool bool) {
		m.mu.Lock()
		m.inflight--
		m.lastCreate = time.Now()
		if class != "" { // a group no class fits is neither a hit nor a miss
			c := m.countsLocked(class)
			if fromPool {
				c.hits++
			} else {
				c.misses++
			}
		}
		m.mu.Unlock()
		if class != "" {
			if fromPool {
				m.hits.WithLabelValues(class).Inc()
			} else {
				m.misses.WithLabelValues(class).Inc()
			}
		}
		m.poke()
	}
}

func (m *poolManager) countsLocked(class string) *poolCounts {
	c := m.counts[class]
	if c == nil {
		c = &poolCounts{}
		m.counts[class] = c
	}
	return c
}

// idleFor says how long until creates have been quiet for m.quiet (0: now).
func (m *poolManager) idleFor() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.inflight > 0 {
		return m.quiet
	}
	return max(m.quiet-time.Since(m.lastCreate), 0)
}

// status is the pool as the host reports it.
func (m *poolManager) status() []api.PoolClassStatus {
	sizes := m.pool.PoolStats()
	tg, _ := m.targets()
	m.mu.Lock()
	defer m.mu.Unlock()
	names := map[string]bool{}
	for k := range sizes {
		names[k] = true
	}
	for k := range tg {
		names[k] = true
	}
	for k := range m.counts {
		names[k] = true
	}
	out := make([]api.PoolClassStatus, 0, len(names))
	for k := range names {
		c := m.counts[k]
		if c == nil {
			c = &poolCounts{}
		}
		out = append(out, api.PoolClassStatus{Class: k, Size: sizes[k], Target: tg[k], Hits: c.hits, Misses: c.misses, Prepared: c.prepared})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Class < out[j].Class })
	return out
}

// run keeps the pool at its targets until ctx ends. Prepared sandboxes
// stay when it returns (they are durable and found again on restart).
func (m *poolManager) run(ctx context.Context) {
	if sizes := m.pool.PoolStats(); len(sizes) > 0 {
		m.log.Info("warm pool found from the last run", "classes", api.PoolTargets(sizes).String())
	}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		next := m.step(ctx)
		if ctx.Err() != nil {
			return
		}
		var after <-chan time.Time
		var timer *time.Timer
		if next > 0 {
			timer = time.NewTimer(next)
			after = timer.C
		}
		select {
		case <-ctx.Done():
		case <-m.wake:
		case <-tick.C:
		case <-after:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// step does at most one unit of work (a drain or one prepare) and returns
// how soon it wants to run again (0: only when woken or on the tick).
func (m *poolManager) step(ctx context.Context) time.Duration {
	tg, known := m.targets()
	sizes := m.pool.PoolStats()
	// Shrink first, and only once the server's targets are known.
	if known {
		for class, have := range sizes {
			if want := tg[class]; have > want {
				n, err := m.pool.DrainPool(ctx, class, have-want)
				if err != nil && ctx.Err() == nil {
					m.log.Warn("drain warm pool", "class", class, "err", err)
					return time.Second
				}
				m.log.Debug("drained warm pool", "class", class, "removed", n)
				return time.Millisecond
			}
		}
	}
	// Grow the class furthest below its target.
	best, gap := "", 0
	for class, want := range tg {
		if g := want - sizes[class]; g > gap || (g == gap && g > 0 && class < best) {
			best, gap = class, g
		}
	}
	if gap == 0 {
		return 0
	}
	if wait := m.idleFor(); wait > 0 {
		return wait // creates are running: yield to them
	}
	sc, _ := api.LookupShapeClass(best)
	start := time.Now()
	err := m.pool.PrepareSandbox(ctx, sandbox.PoolClass{Name: sc.Name, MilliCPU: sc.MilliCPU, Memory: sc.Memory})
	if err != nil {
		if ctx.Err() == nil {
			m.failures.WithLabelValues(best).Inc()
			m.log.Warn("prepare warm-pool sandbox", "class", best, "err", err)
		}
		return 2 * time.Second // back off; do not spin on a failing runtime
	}
	m.prepareSeconds.Observe(time.Since(start).Seconds())
	m.prepared.WithLabelValues(best).Inc()
	m.mu.Lock()
	m.countsLocked(best).prepared++
	m.mu.Unlock()
	return time.Millisecond
}

// drainOnStop waits for the refill loop to end (its context is done) and
// removes every prepared sandbox, within a bound: what is left is found
// again at the next start.
func (m *poolManager) drainOnStop() {
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		m.log.Warn("warm pool: the refill loop did not stop; not draining")
		return
	}
	if len(m.pool.PoolStats()) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := m.pool.DrainPool(ctx, "", -1)
	if err != nil {
		m.log.Warn("warm pool: drain at stop", "removed", n, "err", err)
		return
	}
	m.log.Info("warm pool drained at stop", "removed", n)
}

// servePoolTargets is the control plane pushing new targets as soon as it
// planned them (the pool report's reply carries them too, a little later).
func (a *Agent) servePoolTargets(w http.ResponseWriter, r *http.Request) error {
	var t api.PoolTargets
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&t); err != nil {
		return errdefs.Invalid("pool targets: " + err.Error())
	}
	if a.pool == nil {
		return errdefs.Userf(errdefs.ErrUnavailable, "this host's sandbox runtime has no warm pool")
	}
	if a.pool.setServerTargets(t) {
		a.log.Info("warm-pool targets from the control plane", "targets", t.String())
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
