package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/forecast"
	"github.com/skiffhq/skiff/internal/hostapi"
	"github.com/skiffhq/skiff/internal/scheduler"
	"github.com/skiffhq/skiff/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Warm pools, seen from the control plane (see the README's "Fast start"):
//
//	every replica   records the creates it serves into the create history
//	                (historyRecorder → store, per account × image × class);
//	                takes its agents' pool reports (POST /agent/v1/pool),
//	                stores them when they change, and answers each with the
//	                host's current targets.
//	the leader      forecasts each history series (internal/forecast), turns
//	                the forecasts into per-host per-class targets (planTargets)
//	                and writes them, guarded by its leadership; it pushes
//	                them at once to agents connected to it (PUT
//	                /host/v1/pool/targets); the others get them in the reply
//	                to their next report, within two seconds.

// PoolConfig configures the forecast and the planner.
type PoolConfig struct {
	// Bucket is the create history's bucket width (default 1m); Season the
	// number of buckets in one season (default 1440: a day of minutes).
	Bucket time.Duration
	Season int
	// Lead is how many buckets ahead the planner provisions (default 2).
	Lead int
	// MaxPerHost caps the planned prepared sandboxes of one host, all
	// classes together (0: the planner sets no targets).
	MaxPerHost int
}

func (c PoolConfig) withDefaults() PoolConfig {
	if c.Bucket <= 0 {
		c.Bucket = time.Minute
	}
	if c.Season <= 0 {
		c.Season = 1440
	}
	if c.Lead <= 0 {
		c.Lead = 2
	}
	return c
}

// keptBuckets is how much history a series keeps: two seasons (enough to
// seed the seasonal model and its trend) and a little more.
func (c PoolConfig) keptBuckets() int { return 2*c.Season + c.Lead + 2 }

// --- the agent side of the hub ---

// poolReports holds the last pool report of each agent connected here.
type poolReports struct {
	mu      sync.Mutex
	last    map[string][]api.PoolClassStatus
	written map[string]time.Time
}

// handlePoolReport is POST /agent/v1/pool.
func (h *Hub) handlePoolReport(w http.ResponseWriter, r *http.Request, hostID string) {
	var rep hostapi.PoolReport
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&rep); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.pools.mu.Lock()
	if h.pools.last == nil {
		h.pools.last, h.pools.written = map[string][]api.PoolClassStatus{}, map[string]time.Time{}
	}
	changed := !reflect.DeepEqual(h.pools.last[hostID], rep.Classes)
	stale := time.Since(h.pools.written[hostID]) > time.Minute
	h.pools.last[hostID] = rep.Classes
	h.pools.mu.Unlock()
	ctx := r.Context()
	if changed || stale {
		// Written only when it changed (and once a minute so UpdatedAt says
		// the report is live): hits and misses move with every create.
		if err := h.store.PutPoolStatus(ctx, hostID, &api.HostPool{Classes: rep.Classes, UpdatedAt: time.Now().UTC()}); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		h.pools.mu.Lock()
		h.pools.written[hostID] = time.Now()
		h.pools.mu.Unlock()
	}
	t, err := h.store.GetPoolTargets(ctx, hostID)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	imgs, err := h.store.GetPoolImages(ctx, hostID)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, http.StatusOK, hostapi.PoolReply{Targets: t, Images: imgs})
}

// forgetPool drops a disconnected host's report from this replica's view.
func (h *Hub) forgetPool(hostID string) {
	h.pools.mu.Lock()
	delete(h.pools.last, hostID)
	delete(h.pools.written, hostID)
	h.pools.mu.Unlock()
}

// pushPoolTargets sends targets to the host's agent if it is connected to
// this replica (best effort: the agent's next report fetches them anyway).
func (h *Hub) pushPoolTargets(ctx context.Context, hostID string, t api.PoolTargets) {
	if h == nil {
		return
	}
	cl, err := h.Client(hostID)
	if err != nil {
		return
	}
	b, _ := json.Marshal(t)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://agent/host/v1/pool/targets", bytes.NewReader(b))
	resp, err := cl.Do(req)
	if err != nil {
		return
	}
	resp.Body.Close()
}

// poolCollector exports the pools of the agents connected to this replica
// on the server's /metrics.
type poolCollector struct{ h *Hub }

var (
	hostPoolSize     = prometheus.NewDesc("skiff_host_pool_size", "Prepared sandboxes in a host's warm pool, per shape class (hosts connected to this replica).", []string{"host", "class"}, nil)
	hostPoolTarget   = prometheus.NewDesc("skiff_host_pool_target", "A host's warm-pool target, per shape class.", []string{"host", "class"}, nil)
	hostPoolHits     = prometheus.NewDesc("skiff_host_pool_hits_total", "Creates on a host that took a prepared sandbox, since its agent started.", []string{"host", "class"}, nil)
	hostPoolMisses   = prometheus.NewDesc("skiff_host_pool_misses_total", "Creates on a host that built their sandbox, since its agent started.", []string{"host", "class"}, nil)
	hostPoolPrepared = prometheus.NewDesc("skiff_host_pool_prepared_total", "Sandboxes a host prepared for its pool (rate(): refill rate), since its agent started.", []string{"host", "class"}, nil)
)

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{hostPoolSize, hostPoolTarget, hostPoolHits, hostPoolMisses, hostPoolPrepared} {
		ch <- d
	}
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	c.h.pools.mu.Lock()
	defer c.h.pools.mu.Unlock()
	for host, classes := range c.h.pools.last {
		for _, cl := range classes {
			ch <- prometheus.MustNewConstMetric(hostPoolSize, prometheus.GaugeValue, float64(cl.Size), host, cl.Class)
			ch <- prometheus.MustNewConstMetric(hostPoolTarget, prometheus.GaugeValue, float64(cl.Target), host, cl.Class)
			ch <- prometheus.MustNewConstMetric(hostPoolHits, prometheus.CounterValue, float64(cl.Hits), host, cl.Class)
			ch <- prometheus.MustNewConstMetric(hostPoolMisses, prometheus.CounterValue, float64(cl.Misses), host, cl.Class)
			ch <- prometheus.MustNewConstMetric(hostPoolPrepared, prometheus.CounterValue, float64(cl.Prepared), host, cl.Class)
		}
	}
}

// withPools fills in each host's pool: the agent's report, with the
// control plane's target where it is newer (higher) than what the agent
// reported so far.
func withPools(hosts []api.Host, status map[string]*api.HostPool, targets map[string]api.PoolTargets) {
	for i := range hosts {
		st, tg := status[hosts[i].ID], targets[hosts[i].ID]
		if st == nil && len(tg) == 0 {
			continue
		}
		p := &api.HostPool{}
		seen := map[string]bool{}
		if st != nil {
			p.UpdatedAt = st.UpdatedAt
			for _, c := range st.Classes {
				c.Target = max(c.Target, tg[c.Class])
				p.Classes = append(p.Classes, c)
				seen[c.Class] = true
			}
		}
		for class, n := range tg {
			if !seen[class] && n > 0 {
				p.Classes = append(p.Classes, api.PoolClassStatus{Class: class, Target: n})
			}
		}
		sort.Slice(p.Classes, func(a, b int) bool { return p.Classes[a].Class < p.Classes[b].Class })
		hosts[i].Pool = p
	}
}

// --- create history ---

// historyRecorder counts the creates this replica serves per account ×
// image × shape class × bucket, and adds them to the store's history in
// one batch per flush, off the create path.
type historyRecorder struct {
	store *store.Store
	cfg   PoolConfig
	now   func() time.Time

	mu      sync.Mutex
	pending map[store.HistoryIncrement]int64 // Count unset in the key
}

func newHistoryRecorder(st *store.Store, cfg PoolConfig) *historyRecorder {
	return &historyRecorder{store: st, cfg: cfg.withDefaults(), now: time.Now, pending: map[store.HistoryIncrement]int64{}}
}

// note records one created group.
func (r *historyRecorder) note(g *api.Group) {
	if r == nil || g == nil || len(g.Spec.Containers) == 0 {
		return
	}
	class := api.ShapeClassOf(g.Spec.Requests())
	if class == "" {
		return // no pool serves it: nothing to forecast
	}
	k := store.HistoryIncrement{Account: g.AccountID, Image: g.Spec.Containers[0].Image, Class: class,
		Bucket: r.now().UnixMilli() / r.cfg.Bucket.Milliseconds()}
	r.mu.Lock()
	r.pending[k]++
	r.mu.Unlock()
}

// flush writes what was counted since the last flush.
func (r *historyRecorder) flush(ctx context.Context) error {
	r.mu.Lock()
	if len(r.pending) == 0 {
		r.mu.Unlock()
		return nil
	}
	incs := make([]store.HistoryIncrement, 0, len(r.pending))
	for k, n := range r.pending {
		k.Count = n
		incs = append(incs, k)
	}
	r.pending = map[store.HistoryIncrement]int64{}
	r.mu.Unlock()
	err := r.store.AddHistory(ctx, r.cfg.Bucket, r.cfg.keptBuckets(), incs)
	if err != nil && ctx.Err() == nil {
		// Keep the counts for the next flush rather than lose them.
		r.mu.Lock()
		for _, in := range incs {
			n := in.Count
			in.Count = 0
			r.pending[in] += n
		}
		r.mu.Unlock()
	}
	return err
}

func (r *historyRecorder) run(ctx context.Context) {
	every := min(max(r.cfg.Bucket/4, 250*time.Millisecond), 5*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = r.flush(fctx)
			cancel()
			return
		case <-t.C:
			_ = r.flush(ctx)
		}
	}
}

// --- the planner (leader only) ---

type planner struct {
	store *store.Store
	hub   *Hub
	cfg   PoolConfig
	log   *slog.Logger
	now   func() time.Time
	// view is the leader's view of the hosts (controller.hostView), fresh
	// from the last scheduling round; without one the planner reads the
	// hosts and groups from the store.
	view func() ([]scheduler.Host, bool)
}

func (p *planner) run(ctx context.Context, guard clientv3.Cmp) {
	if p.cfg.MaxPerHost <= 0 {
		// Planning is off: targets an earlier leader planned must not
		// stay in force, or hosts would keep pools nobody sizes.
		if err := p.clear(ctx, guard); err != nil && ctx.Err() == nil && !errors.Is(err, store.ErrGuard) {
			p.log.Warn("clear warm-pool targets", "err", err)
		}
		return
	}
	every := min(max(p.cfg.Bucket/2, 500*time.Millisecond), 10*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := p.round(ctx, guard); err != nil && ctx.Err() == nil && !errors.Is(err, store.ErrGuard) {
			p.log.Warn("pool planning round failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// demand forecasts the next buckets of every series and sums them per
// shape class; it also returns the series that saw no create for longer
// than the history keeps (to expire), and per class the images of the
// series expected to create, most expected first (their rootfs is what a
// host should hold ahead of demand).
func (p *planner) demand(series []*store.HistorySeries, now time.Time) (map[string]int, []*store.HistorySeries, map[string][]string) {
	width := p.cfg.Bucket.Milliseconds()
	cur := now.UnixMilli() / width
	horizon := p.cfg.Lead + 1 // the current bucket and Lead more
	params := forecast.DefaultParams(p.cfg.Season)
	type acc struct {
		points []float64
		errSq  float64
	}
	sums := map[string]*acc{}
	imgWeight := map[string]map[string]float64{}
	var expired []*store.HistorySeries
	kept := int64(p.cfg.keptBuckets())
	for _, s := range series {
		if s.WidthMs != width || s.Last() < cur-kept {
			expired = append(expired, s)
			continue
		}
		// Complete buckets only: First … cur-1, silent buckets as zeros.
		var hist []float64
		var partial float64
		for b := s.First; b < cur; b++ {
			v := 0.0
			if i := b - s.First; i < int64(len(s.Counts)) {
				v = float64(s.Counts[i])
			}
			hist = append(hist, v)
		}
		if i := cur - s.First; i >= 0 && i < int64(len(s.Counts)) {
			partial = float64(s.Counts[i])
		}
		r := forecast.Forecast(hist, horizon, params)
		// The current bucket is already at least what it counted so far.
		if len(r.Points) > 0 {
			r.Points[0] = math.Max(r.Points[0], partial)
		}
		total := 0.0
		for _, v := range r.Points {
			total += v
		}
		if total >= 0.5 && s.Image != "" {
			if imgWeight[s.Class] == nil {
				imgWeight[s.Class] = map[string]float64{}
			}
			imgWeight[s.Class][s.Image] += total
		}
		a := sums[s.Class]
		if a == nil {
			a = &acc{points: make([]float64, horizon)}
			sums[s.Class] = a
		}
		for i, v := range r.Points {
			a.points[i] += v
		}
		a.errSq += r.Error * r.Error
	}
	out := map[string]int{}
	for class, a := range sums {
		if n := forecast.Demand(forecast.Result{Points: a.points, Error: math.Sqrt(a.errSq)}); n > 0 {
			out[class] = n
		}
	}
	images := map[string][]string{}
	for class, w := range imgWeight {
		refs := make([]string, 0, len(w))
		for ref := range w {
			refs = append(refs, ref)
		}
		sort.Slice(refs, func(i, j int) bool {
			if w[refs[i]] != w[refs[j]] {
				return w[refs[i]] > w[refs[j]]
			}
			return refs[i] < refs[j]
		})
		images[class] = refs
	}
	return out, expired, images
}

// maxPredictedImages bounds the images one host is asked to hold ahead of
// demand: the most expected ones.
const maxPredictedImages = 8

// hostImages is the images a host with targets t should hold: those of
// the classes it prepares sandboxes for, most expected first.
func hostImages(t api.PoolTargets, byClass map[string][]string) []string {
	var out []string
	seen := map[string]bool{}
	classes := make([]string, 0, len(t))
	for c, n := range t {
		if n > 0 {
			classes = append(classes, c)
		}
	}
	sort.Strings(classes)
	// Round-robin over the classes so that one class's long tail does not
	// crowd out another's first image.
	for i := 0; len(out) < maxPredictedImages; i++ {
		added := false
		for _, c := range classes {
			if i < len(byClass[c]) {
				added = true
				if ref := byClass[c][i]; !seen[ref] && len(out) < maxPredictedImages {
					seen[ref] = true
					out = append(out, ref)
				}
			}
		}
		if !added {
			break
		}
	}
	return out
}

// round plans once: forecast, spread, write what changed, push.
func (p *planner) round(ctx context.Context, guard clientv3.Cmp) error {
	now := p.now()
	series, err := p.store.ListHistory(ctx)
	if err != nil {
		return err
	}
	need, expired, images := p.demand(series, now)
	for _, s := range expired {
		_ = p.store.DeleteHistory(ctx, s)
	}
	snap, err := p.hosts(ctx)
	if err != nil {
		return err
	}
	status, err := p.store.ListPoolStatus(ctx)
	if err != nil {
		return err
	}
	current, err := p.store.ListPoolTargets(ctx)
	if err != nil {
		return err
	}
	var cands []poolHost
	for _, h := range snap {
		if !h.Ready || status[h.ID] == nil { // a host that never reported has no pool
			continue
		}
		cands = append(cands, poolHost{ID: h.ID, Free: api.Resources{
			MilliCPU: h.Capacity.MilliCPU - h.Allocated.MilliCPU,
			Memory:   h.Capacity.Memory - h.Allocated.Memory,
			Groups:   h.Capacity.Groups - h.Allocated.Groups,
		}, LimitGroups: h.Capacity.Groups > 0})
	}
	plan := planTargets(need, cands, p.cfg.MaxPerHost)
	// Hosts that had targets and are no longer planned for go to none.
	for id, t := range current {
		if _, ok := plan[id]; !ok && len(t) > 0 {
			plan[id] = api.PoolTargets{}
		}
	}
	for id, t := range plan {
		if current[id].String() == t.String() {
			continue
		}
		if err := p.store.PutPoolTargets(ctx, id, t, guard); err != nil {
			return err // ErrGuard: no longer leading
		}
		p.log.Info("warm-pool targets", "host", id, "targets", t.String())
		go p.hub.pushPoolTargets(context.WithoutCancel(ctx), id, t)
	}
	// The rootfs of predicted groups: each planned host is asked to hold
	// the images of the classes it prepares for (agents pull what they
	// lack when idle; they learn the list with their next pool report).
	currentImgs, err := p.store.ListPoolImages(ctx)
	if err != nil {
		return err
	}
	for id := range currentImgs {
		if _, ok := plan[id]; !ok {
			plan[id] = api.PoolTargets{}
		}
	}
	for id, t := range plan {
		want := hostImages(t, images)
		if slices.Equal(want, currentImgs[id]) {
			continue
		}
		if err := p.store.PutPoolImages(ctx, id, want, guard); err != nil {
			return err
		}
	}
	return nil
}

// clear sets every stored target to none, for when planning is off.
func (p *planner) clear(ctx context.Context, guard clientv3.Cmp) error {
	current, err := p.store.ListPoolTargets(ctx)
	if err != nil {
		return err
	}
	for id, t := range current {
		if len(t) == 0 {
			continue
		}
		if err := p.store.PutPoolTargets(ctx, id, api.PoolTargets{}, guard); err != nil {
			return err
		}
		p.log.Info("warm-pool planning is off: targets cleared", "host", id)
		go p.hub.pushPoolTargets(context.WithoutCancel(ctx), id, api.PoolTargets{})
	}
	return nil
}

// hosts returns the hosts with their allocation: the scheduler's view when
// it is fresh, else read from the store.
func (p *planner) hosts(ctx context.Context) ([]scheduler.Host, error) {
	if p.view != nil {
		if hs, ok := p.view(); ok {
			return hs, nil
		}
	}
	hostRecs, err := p.store.ListHosts(ctx)
	if err != nil {
		return nil, err
	}
	alive, err := p.store.AliveHosts(ctx)
	if err != nil {
		return nil, err
	}
	groups, _, err := p.store.ListGroups(ctx)
	if err != nil {
		return nil, err
	}
	snap, _ := snapshot(hostRecs, alive, groups)
	out := make([]scheduler.Host, len(snap))
	for i, h := range snap {
		out[i] = *h
	}
	return out, nil
}

// poolHost is a ready host that reports a pool, with its free capacity.
type poolHost struct {
	ID   string
	Free api.Resources
	// LimitGroups says Free.Groups bounds the host (it has a group cap).
	LimitGroups bool
}

// planTargets spreads each class's needed prepared sandboxes over hosts in
// proportion to how many of the class each host still has room for, never
// more than that room, nor more than maxPerHost per host over all classes.
// Larger needs are placed first. Pure and deterministic.
//
// Room is counted in groups of a quarter of the class's limits: groups
// mostly ask for less than their class's upper bound (a 64Mi group is in
// the 512Mi class), and counting full-size ones would starve the pool of
// a host that can in fact take many; the scheduler still checks every
// placement against the group's real size.
func planTargets(need map[string]int, hosts []poolHost, maxPerHost int) map[string]api.PoolTargets {
	out := map[string]api.PoolTargets{}
	if len(hosts) == 0 || maxPerHost <= 0 {
		return out
	}
	hosts = append([]poolHost(nil), hosts...)
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].ID < hosts[j].ID })
	used := make([]int, len(hosts))
	free := make([]api.Resources, len(hosts))
	for i, h := range hosts {
		free[i] = h.Free
	}
	classes := make([]string, 0, len(need))
	for c, n := range need {
		if n > 0 {
			classes = append(classes, c)
		}
	}
	sort.Slice(classes, func(i, j int) bool {
		if need[classes[i]] != need[classes[j]] {
			return need[classes[i]] > need[classes[j]]
		}
		return classes[i] < classes[j]
	})
	for _, class := range classes {
		sc, ok := api.LookupShapeClass(class)
		if !ok {
			continue
		}
		room := make([]int, len(hosts))
		total := 0
		for i := range hosts {
			r := maxPerHost - used[i]
			if unit := sc.MilliCPU / 4; unit > 0 {
				r = min(r, int(max(free[i].MilliCPU, 0)/unit))
			}
			if unit := sc.Memory / 4; unit > 0 {
				r = min(r, int(max(free[i].Memory, 0)/unit))
			}
			if hosts[i].LimitGroups {
				r = min(r, max(free[i].Groups, 0))
			}
			room[i] = max(r, 0)
			total += room[i]
		}
		want := min(need[class], total)
		if want == 0 {
			continue
		}
		give := make([]int, len(hosts))
		given := 0
		for i := range hosts { // proportional share, rounded down
			give[i] = room[i] * want / total
			given += give[i]
		}
		for given < want { // the remainder, to the hosts with most room left
			best := -1
			for i := range hosts {
				if give[i] < room[i] && (best < 0 || room[i]-give[i] > room[best]-give[best]) {
					best = i
				}
			}
			if best < 0 {
				break
			}
			give[best]++
			given++
		}
		for i, n := range give {
			if n == 0 {
				continue
			}
			if out[hosts[i].ID] == nil {
				out[hosts[i].ID] = api.PoolTargets{}
			}
			out[hosts[i].ID][class] = n
			used[i] += n
			free[i].MilliCPU -= int64(n) * sc.MilliCPU / 4
			free[i].Memory -= int64(n) * sc.Memory / 4
			free[i].Groups -= n
		}
	}
	return out
}
