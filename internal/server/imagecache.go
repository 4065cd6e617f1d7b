package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/image"
	"github.com/skiffhq/skiff/internal/store"
)

// Registry pulls and image caches, as the server sees them: the server
// never talks to a registry; it relays pulls to the agents (which own their
// hosts' stores) and keeps image cache records in etcd. A cache controller
// asks hosts to pull and pin a cache's images and tracks each host's state;
// CreateGroup matches a Ready cache, and the scheduler prefers the hosts
// that hold it.
//
//	skiff image pull ──POST /v1/images/pull──▶ server ──POST /host/v1/images/pull──▶ agent(s) ──▶ registry
//	          ◀──────── NDJSON progress, one stream, lines tagged with hostId ◀───────┘
//
//	skiff cache create ──▶ etcd imagecaches/<id> (Creating)
//	cache controller ──PUT /host/v1/imagecaches/<id>──▶ agent: pull + pin ──▶ hostStates[] ──▶ Ready

// redactForAPI masks registry passwords in what the API returns.
func redactForAPI(v any) any {
	switch x := v.(type) {
	case *api.Group:
		return x.Redacted()
	case api.List[*api.Group]:
		items := make([]*api.Group, len(x.Items))
		for i, g := range x.Items {
			items[i] = g.Redacted()
		}
		x.Items = items
		return x
	case *api.ImageCache:
		return x.Redacted()
	case api.List[*api.ImageCache]:
		items := make([]*api.ImageCache, len(x.Items))
		for i, c := range x.Items {
			items[i] = c.Redacted()
		}
		x.Items = items
		return x
	}
	return v
}

// pullImage relays a pull to the hosts and streams their progress back as
// NDJSON api.PullProgress lines; every host ends with "complete" or "error".
func (a *apiHandler) pullImage(w http.ResponseWriter, r *http.Request) error {
	var req api.PullImageRequest
	if err := decodeStrict(r.Body, &req); err != nil {
		return err
	}
	if err := api.ValidateImageRef(req.Image); err != nil {
		return errdefs.Invalid("image: " + err.Error())
	}
	if err := (&api.ImageCacheRequest{Images: []string{req.Image}, ImageRegistryCredentials: req.Credentials,
		InsecureRegistries: req.InsecureRegistries, PlainHTTPRegistries: req.PlainHTTPRegistries}).Validate(true); err != nil {
		return errdefs.Invalid(err.Error())
	}
	hosts := a.hub.ConnectedHosts()
	if len(req.Hosts) > 0 {
		want := map[string]bool{}
		for _, h := range req.Hosts {
			want[h] = true
		}
		var sel []string
		for _, h := range hosts {
			if want[h] {
				sel = append(sel, h)
			}
		}
		if len(sel) == 0 {
			return errdefs.Userf(errdefs.ErrNotFound, fmt.Sprintf("none of the hosts %v is connected to this server", req.Hosts))
		}
		hosts = sel
	}
	if len(hosts) == 0 {
		return errdefs.Userf(errdefs.ErrUnavailable, "no host is connected to pull the image; start an agent first")
	}
	fwd := req
	fwd.Hosts = nil
	body, _ := json.Marshal(fwd)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	send := func(p api.PullProgress) {
		mu.Lock()
		defer mu.Unlock()
		if enc.Encode(p) == nil && fl != nil {
			fl.Flush()
		}
	}
	var wg sync.WaitGroup
	for _, hostID := range hosts {
		wg.Add(1)
		go func(hostID string) {
			defer wg.Done()
			if err := a.relayPull(r.Context(), hostID, body, send); err != nil {
				send(api.PullProgress{HostID: hostID, Status: "error", Error: errdefs.Message(err), Reason: "ErrImagePull"})
			}
		}(hostID)
	}
	wg.Wait()
	return nil
}

func (a *apiHandler) relayPull(ctx context.Context, hostID string, body []byte, send func(api.PullProgress)) error {
	cl, err := a.hub.Client(hostID)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent/host/v1/images/pull", strings.NewReader(string(body)))
	if err != nil {
		return err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return errdefs.Userf(errdefs.ErrUnavailable, "host "+hostID+": "+err.Error())
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return hostError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	final := false
	for sc.Scan() {
		var p api.PullProgress
		if json.Unmarshal(sc.Bytes(), &p) != nil {
			continue
		}
		p.HostID = hostID
		final = final || p.Status == "complete" || p.Status == "error"
		send(p)
	}
	if !final {
		return errdefs.Userf(errdefs.ErrUnavailable, "host "+hostID+" ended the pull without a result")
	}
	return nil
}

// --- image cache API -------------------------------------------------------

// The image cache calls of the service layer; the native handlers below
// and the ECI front both go through them.

// CreateImageCache records a new cache; the cache controller pulls it.
func (s *Service) CreateImageCache(ctx context.Context, c Caller, req api.ImageCacheRequest) (*api.ImageCache, error) {
	if err := req.Validate(false); err != nil {
		return nil, errdefs.Invalid(err.Error())
	}
	now := time.Now().UTC()
	ic := &api.ImageCache{
		ID: newID("imc-"), Name: req.Name, AccountID: c.AccountID, Images: req.Images,
		ImageRegistryCredentials: req.ImageRegistryCredentials, InsecureRegistries: req.InsecureRegistries, PlainHTTPRegistries: req.PlainHTTPRegistries,
		Status: api.ImageCacheCreating, Generation: 1, CreatedAt: now, UpdatedAt: now,
	}
	if req.Hosts != nil {
		ic.Hosts = *req.Hosts
	}
	if req.RetentionDays != nil {
		ic.RetentionDays = *req.RetentionDays
	}
	return s.store.CreateImageCache(ctx, ic)
}

// ListImageCaches returns the caller's caches, oldest first.
func (s *Service) ListImageCaches(ctx context.Context, c Caller) ([]*api.ImageCache, error) {
	all, err := s.store.ListImageCaches(ctx)
	if err != nil {
		return nil, err
	}
	items := []*api.ImageCache{}
	for _, ic := range all {
		if ic.AccountID == c.AccountID {
			items = append(items, ic)
		}
	}
	sort.Slice(items, func(i, j int) bool { return items[i].CreatedAt.Before(items[j].CreatedAt) })
	return items, nil
}

// GetImageCache returns one of the caller's caches by id or name.
func (s *Service) GetImageCache(ctx context.Context, c Caller, idOrName string) (*api.ImageCache, error) {
	return s.resolveImageCache(ctx, c, idOrName)
}

// resolveImageCache finds a cache by id or name in the caller's account.
func (s *Service) resolveImageCache(ctx context.Context, c Caller, idOrName string) (*api.ImageCache, error) {
	if idOrName == "" || len(idOrName) > 253 {
		return nil, errdefs.Invalid("an image cache id or name is required")
	}
	ic, err := s.store.GetImageCache(ctx, idOrName)
	if err == nil && ic.AccountID == c.AccountID {
		return ic, nil
	}
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return nil, err
	}
	id, err := s.store.ImageCacheIDByName(ctx, c.AccountID, idOrName)
	if err == nil {
		if ic, err = s.store.GetImageCache(ctx, id); err == nil && ic.AccountID == c.AccountID {
			return ic, nil
		}
	}
	return nil, errdefs.Userf(errdefs.ErrNotFound, fmt.Sprintf("image cache %q not found", idOrName))
}

// UpdateImageCache changes images, credentials, host count or retention;
// a change of what is pulled sends the cache back to Creating.
func (s *Service) UpdateImageCache(ctx context.Context, c Caller, idOrName string, req api.ImageCacheRequest) (*api.ImageCache, error) {
	if err := req.Validate(true); err != nil {
		return nil, errdefs.Invalid(err.Error())
	}
	if req.Name != "" {
		return nil, errdefs.Invalid("an image cache cannot be renamed")
	}
	cur, err := s.resolveImageCache(ctx, c, idOrName)
	if err != nil {
		return nil, err
	}
	return s.store.UpdateImageCache(ctx, cur.ID, func(c *api.ImageCache) error {
		if c.Status == api.ImageCacheDeleting {
			return errdefs.Userf(errdefs.ErrIncorrectStat, "the image cache is being deleted")
		}
		repull := false
		if len(req.Images) > 0 {
			c.Images, repull = req.Images, true
		}
		if req.ImageRegistryCredentials != nil {
			c.ImageRegistryCredentials, repull = req.ImageRegistryCredentials, true
		}
		if req.InsecureRegistries != nil {
			c.InsecureRegistries, repull = req.InsecureRegistries, true
		}
		if req.PlainHTTPRegistries != nil {
			c.PlainHTTPRegistries, repull = req.PlainHTTPRegistries, true
		}
		if req.Hosts != nil {
			c.Hosts = *req.Hosts
		}
		if req.RetentionDays != nil {
			c.RetentionDays = *req.RetentionDays
			c.ExpiresAt = expiry(c)
		}
		if repull {
			c.Generation++
			c.Status, c.Reason, c.Message = api.ImageCacheCreating, "", ""
			c.ReadyAt, c.ExpiresAt = nil, nil
		}
		return nil
	})
}

// DeleteImageCache starts a cache's removal from its hosts.
func (s *Service) DeleteImageCache(ctx context.Context, c Caller, idOrName string) (*api.ImageCache, error) {
	cur, err := s.resolveImageCache(ctx, c, idOrName)
	if err != nil {
		return nil, err
	}
	return s.store.UpdateImageCache(ctx, cur.ID, func(c *api.ImageCache) error {
		if c.Status == api.ImageCacheDeleting {
			return store.ErrNoChange
		}
		c.Status, c.Reason, c.Message = api.ImageCacheDeleting, "", ""
		return nil
	})
}

func (a *apiHandler) createImageCache(w http.ResponseWriter, r *http.Request) error {
	var req api.ImageCacheRequest
	if err := decodeStrict(r.Body, &req); err != nil {
		return err
	}
	out, err := a.svc.CreateImageCache(r.Context(), callerFrom(r.Context()), req)
	if err != nil {
		return err
	}
	a.log.Info("image cache created", "cache", out.ID, "name", out.Name, "images", len(out.Images))
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (a *apiHandler) listImageCaches(w http.ResponseWriter, r *http.Request) error {
	items, err := a.svc.ListImageCaches(r.Context(), callerFrom(r.Context()))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.List[*api.ImageCache]{Items: items, Total: len(items)})
	return nil
}

func (a *apiHandler) getImageCache(w http.ResponseWriter, r *http.Request) error {
	c, err := a.svc.GetImageCache(r.Context(), callerFrom(r.Context()), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

func (a *apiHandler) updateImageCache(w http.ResponseWriter, r *http.Request) error {
	var req api.ImageCacheRequest
	if err := decodeStrict(r.Body, &req); err != nil {
		return err
	}
	out, err := a.svc.UpdateImageCache(r.Context(), callerFrom(r.Context()), r.PathValue("id"), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *apiHandler) deleteImageCache(w http.ResponseWriter, r *http.Request) error {
	out, err := a.svc.DeleteImageCache(r.Context(), callerFrom(r.Context()), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, out)
	return nil
}

func expiry(c *api.ImageCache) *time.Time {
	if c.RetentionDays <= 0 || c.ReadyAt == nil {
		return nil
	}
	base := *c.ReadyAt
	if c.LastMatchedAt != nil && c.LastMatchedAt.After(base) {
		base = *c.LastMatchedAt
	}
	t := base.Add(time.Duration(c.RetentionDays) * 24 * time.Hour)
	return &t
}

// --- matching at create ------------------------------------------------------

// matchImageCache validates the group's registry fields and fills in
// Spec.ImageCacheID: the pinned cache (which must exist in the caller's
// account), or, unless autoMatchImageCache is false, a Ready cache of the
// account holding every image of the group. It returns an event to record.
func (s *Service) matchImageCache(ctx context.Context, c Caller, g *api.Group) (*api.Event, error) {
	if err := api.ValidateGroupRegistryAccess(&g.Spec); err != nil {
		return nil, errdefs.Invalid(err.Error())
	}
	if id := g.Spec.ImageCacheID; id != "" {
		ic, err := s.resolveImageCache(ctx, c, id)
		if err != nil {
			return nil, errdefs.Invalid(fmt.Sprintf("spec.imageCacheId: image cache %q not found", id))
		}
		if ic.Status == api.ImageCacheDeleting {
			return nil, errdefs.Invalid(fmt.Sprintf("spec.imageCacheId: image cache %q is being deleted", id))
		}
		g.Spec.ImageCacheID = ic.ID
		return &api.Event{GroupID: g.ID, Type: "Normal", Reason: "ImageCacheUsed", Message: fmt.Sprintf("using image cache %s (%s), %s", ic.Name, ic.ID, ic.Status), Time: time.Now().UTC()}, nil
	}
	if g.Spec.AutoMatchImageCache != nil && !*g.Spec.AutoMatchImageCache {
		return nil, nil
	}
	caches, err := recentCaches(ctx, s.store)
	if err != nil {
		return nil, err
	}
	ic := bestCache(caches, c.AccountID, g)
	if ic == nil {
		return nil, nil
	}
	g.Spec.ImageCacheID = ic.ID
	s.touchImageCache(ic)
	return &api.Event{GroupID: g.ID, Type: "Normal", Reason: "ImageCacheMatched", Message: fmt.Sprintf("matched image cache %s (%s): its images are on the hosts already", ic.Name, ic.ID), Time: time.Now().UTC()}, nil
}

// bestCache is the Ready cache of the account that covers every image of
// g; among several, the smallest (the most specific).
func bestCache(caches []*api.ImageCache, acct string, g *api.Group) *api.ImageCache {
	var want []string
	for _, ct := range append(append([]api.Container{}, g.Spec.InitContainers...), g.Spec.Containers...) {
		n, err := image.NormalizeRef(ct.Image)
		if err != nil {
			return nil
		}
		want = append(want, n)
	}
	var best *api.ImageCache
	for _, c := range caches {
		if c.AccountID != acct || c.Status != api.ImageCacheReady {
			continue
		}
		have := map[string]bool{}
		for _, im := range c.Images {
			if n, err := image.NormalizeRef(im); err == nil {
				have[n] = true
			}
		}
		ok := true
		for _, w := range want {
			ok = ok && have[w]
		}
		if ok && (best == nil || len(c.Images) < len(best.Images) || (len(c.Images) == len(best.Images) && c.ID < best.ID)) {
			best = c
		}
	}
	return best
}

// touchImageCache records a match (at most once an hour: creates must not
// all write the cache record); the retention clock starts again from it.
func (s *Service) touchImageCache(ic *api.ImageCache) {
	if ic.LastMatchedAt != nil && time.Since(*ic.LastMatchedAt) < time.Hour {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = s.store.UpdateImageCache(ctx, ic.ID, func(c *api.ImageCache) error {
			now := time.Now().UTC()
			c.LastMatchedAt = &now
			c.ExpiresAt = expiry(c)
			return nil
		})
	}()
}

// preferredHosts returns, per cache id, the hosts where it is Ready, for
// the scheduler's PreferHosts.
func preferredHosts(caches []*api.ImageCache) map[string][]string {
	out := map[string][]string{}
	for _, c := range caches {
		if c.Status == api.ImageCacheDeleting {
			continue
		}
		for _, h := range c.HostStates {
			if h.Status == api.ImageCacheReady && h.Generation == c.Generation {
				out[c.ID] = append(out[c.ID], h.HostID)
			}
		}
	}
	return out
}

// --- the controller ----------------------------------------------------------

// cacheController brings hosts up to each cache's spec. Every replica runs
// one for the agents connected to it (only it can reach them); the leader
// alone expires caches and removes deleted ones. Updates are CAS on the
// record, so replicas never lose each other's host states.
type cacheController struct {
	store *store.Store
	hub   *Hub
	log   *slog.Logger
	kick  chan struct{}
	// maxAttempts bounds pulls of one cache on one host before it is Failed.
	maxAttempts int
	pullTimeout time.Duration

	mu        sync.Mutex
	inflight  map[string]bool // cache id + "/" + host id
	lastSweep time.Time
}

func newCacheController(st *store.Store, hub *Hub, log *slog.Logger) *cacheController {
	return &cacheController{store: st, hub: hub, log: log, kick: make(chan struct{}, 1), maxAttempts: 3, pullTimeout: 60 * time.Minute, inflight: map[string]bool{}}
}

func (cc *cacheController) wake() {
	select {
	case cc.kick <- struct{}{}:
	default:
	}
}

// run works every couple of seconds and on kicks until ctx ends.
func (cc *cacheController) run(ctx context.Context, leading func() bool) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if err := cc.reconcile(ctx, leading()); err != nil && ctx.Err() == nil {
			cc.log.Warn("image cache round failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-cc.kick:
		}
	}
}

func (cc *cacheController) reconcile(ctx context.Context, leader bool) error {
	caches, err := cc.store.ListImageCaches(ctx)
	if err != nil {
		return err
	}
	if time.Since(cc.lastSweep) > 30*time.Second {
		cc.lastSweep = time.Now()
		cc.sweep(ctx, caches)
	}
	if len(caches) == 0 {
		return nil
	}
	alive, err := cc.store.AliveHosts(ctx)
	if err != nil {
		return err
	}
	connected := map[string]bool{}
	for _, h := range cc.hub.ConnectedHosts() {
		connected[h] = true
	}
	for _, c := range caches {
		if err := cc.reconcileOne(ctx, c, alive, connected, leader); err != nil && ctx.Err() == nil {
			cc.log.Warn("image cache", "cache", c.ID, "err", err)
		}
	}
	return nil
}

func (cc *cacheController) reconcileOne(ctx context.Context, c *api.ImageCache, alive, connected map[string]bool, leader bool) error {
	if c.Status == api.ImageCacheDeleting {
		return cc.deleting(ctx, c, alive, connected, leader)
	}
	if leader && c.ExpiresAt != nil && time.Now().After(*c.ExpiresAt) {
		cc.log.Info("image cache expired", "cache", c.ID, "retentionDays", c.RetentionDays)
		_, err := cc.store.UpdateImageCache(ctx, c.ID, func(c *api.ImageCache) error {
			c.Status, c.Reason, c.Message = api.ImageCacheDeleting, "Expired", fmt.Sprintf("retention of %d days reached", c.RetentionDays)
			return nil
		})
		return err
	}
	targets := cacheTargets(c, alive)
	for _, h := range targets {
		if !connected[h] {
			continue
		}
		hs := hostState(c, h)
		due := hs == nil || hs.Generation < c.Generation ||
			(hs.Status == api.ImageCacheFailed && hs.Attempts < cc.maxAttempts && time.Since(hs.UpdatedAt) > time.Duration(hs.Attempts)*5*time.Second) ||
			(hs.Status == api.ImageCacheCreating && !cc.isInflight(c.ID, h) && time.Since(hs.UpdatedAt) > 10*time.Second)
		if due && cc.startPull(c.ID, h) {
			go cc.pull(context.WithoutCancel(ctx), c, h)
		}
	}
	// Hosts no longer wanted (fewer hosts asked for) let go of the cache.
	want := map[string]bool{}
	for _, h := range targets {
		want[h] = true
	}
	for _, hs := range c.HostStates {
		if !want[hs.HostID] && connected[hs.HostID] && alive[hs.HostID] && !cc.isInflight(c.ID, hs.HostID) {
			cc.release(ctx, c, hs.HostID)
		}
	}
	// The overall status follows from the hosts'.
	_, err := cc.store.UpdateImageCache(ctx, c.ID, func(cur *api.ImageCache) error {
		if cur.Status == api.ImageCacheDeleting {
			return store.ErrNoChange
		}
		st, reason, msg := aggregate(cur, cacheTargets(cur, alive))
		if st == cur.Status && reason == cur.Reason && msg == cur.Message {
			return store.ErrNoChange
		}
		cur.Status, cur.Reason, cur.Message = st, reason, msg
		if st == api.ImageCacheReady && cur.ReadyAt == nil {
			now := time.Now().UTC()
			cur.ReadyAt = &now
			cur.ExpiresAt = expiry(cur)
			cc.log.Info("image cache ready", "cache", cur.ID, "name", cur.Name, "size", cur.Size)
		}
		return nil
	})
	return err
}

// cacheTargets are the hosts that should hold c: every alive host, or
// c.Hosts of them, those already holding it first.
func cacheTargets(c *api.ImageCache, alive map[string]bool) []string {
	var have, rest []string
	seen := map[string]bool{}
	for _, hs := range c.HostStates {
		if alive[hs.HostID] && hs.Status != api.ImageCacheFailed {
			have = append(have, hs.HostID)
			seen[hs.HostID] = true
		}
	}
	for h := range alive {
		if !seen[h] {
			rest = append(rest, h)
		}
	}
	sort.Strings(have)
	sort.Strings(rest)
	all := append(have, rest...)
	if c.Hosts > 0 && len(all) > c.Hosts {
		all = all[:c.Hosts]
	}
	return all
}

func hostState(c *api.ImageCache, hostID string) *api.ImageCacheHost {
	for i := range c.HostStates {
		if c.HostStates[i].HostID == hostID {
			return &c.HostStates[i]
		}
	}
	return nil
}

// aggregate: Ready once every target host (at least one) holds the
// current generation — and it stays Ready while any host does; Failed when
// a host gave up; Creating otherwise.
func aggregate(c *api.ImageCache, targets []string) (api.ImageCacheStatus, string, string) {
	ready := 0
	var failed *api.ImageCacheHost
	for _, h := range targets {
		hs := hostState(c, h)
		switch {
		case hs == nil || hs.Generation < c.Generation:
		case hs.Status == api.ImageCacheReady:
			ready++
		case hs.Status == api.ImageCacheFailed && hs.Attempts >= 3 && failed == nil:
			failed = hs
		}
	}
	switch {
	case len(targets) > 0 && ready == len(targets):
		return api.ImageCacheReady, "", ""
	case c.Status == api.ImageCacheReady && ready > 0:
		return api.ImageCacheReady, "", fmt.Sprintf("ready on %d of %d hosts; the others are pulling", ready, len(targets))
	case failed != nil:
		return api.ImageCacheFailed, failed.Reason, fmt.Sprintf("host %s: %s", failed.HostID, failed.Message)
	case len(targets) == 0:
		return api.ImageCacheCreating, "NoHosts", "no host is connected to hold the cache"
	}
	return api.ImageCacheCreating, "", fmt.Sprintf("ready on %d of %d hosts", ready, len(targets))
}

func (cc *cacheController) startPull(cacheID, hostID string) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	k := cacheID + "/" + hostID
	if cc.inflight[k] {
		return false
	}
	cc.inflight[k] = true
	return true
}

func (cc *cacheController) isInflight(cacheID, hostID string) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.inflight[cacheID+"/"+hostID]
}

// pull asks one host to pull and pin the cache, and records the outcome.
func (cc *cacheController) pull(ctx context.Context, c *api.ImageCache, hostID string) {
	defer func() {
		cc.mu.Lock()
		delete(cc.inflight, c.ID+"/"+hostID)
		cc.mu.Unlock()
		cc.wake()
	}()
	attempts := 1
	if hs := hostState(c, hostID); hs != nil && hs.Generation == c.Generation && hs.Status == api.ImageCacheFailed {
		attempts = hs.Attempts + 1
	}
	cc.setHost(ctx, c.ID, api.ImageCacheHost{HostID: hostID, Status: api.ImageCacheCreating, Generation: c.Generation, Attempts: attempts, UpdatedAt: time.Now().UTC()})
	cc.log.Info("pulling image cache on host", "cache", c.ID, "host", hostID, "images", len(c.Images), "attempt", attempts)
	pctx, cancel := context.WithTimeout(ctx, cc.pullTimeout)
	defer cancel()
	var st api.ImageCacheHost
	cl, err := cc.hub.Client(hostID)
	if err == nil {
		err = hostCall(pctx, cl, http.MethodPut, "/host/v1/imagecaches/"+c.ID, c, &st)
	}
	if err != nil {
		st = api.ImageCacheHost{Status: api.ImageCacheFailed, Reason: "HostUnavailable", Message: errdefs.Message(err)}
	}
	st.HostID, st.Generation, st.Attempts, st.UpdatedAt = hostID, c.Generation, attempts, time.Now().UTC()
	if st.Status == api.ImageCacheReady {
		st.Attempts = 0
	}
	cc.setHost(ctx, c.ID, st)
}

// setHost records one host's state of a cache (and the cache's size and
// digests from a Ready host).
func (cc *cacheController) setHost(ctx context.Context, cacheID string, st api.ImageCacheHost) {
	_, err := cc.store.UpdateImageCache(ctx, cacheID, func(c *api.ImageCache) error {
		if st.Generation < c.Generation || c.Status == api.ImageCacheDeleting {
			return store.ErrNoChange // overtaken by an update or a delete
		}
		replaced := false
		for i := range c.HostStates {
			if c.HostStates[i].HostID == st.HostID {
				c.HostStates[i], replaced = st, true
			}
		}
		if !replaced {
			c.HostStates = append(c.HostStates, st)
		}
		if st.Status == api.ImageCacheReady {
			c.Size = max(c.Size, st.Size)
			if len(st.Digests) > 0 {
				c.Digests = st.Digests
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		cc.log.Warn("record image cache host state", "cache", cacheID, "host", st.HostID, "err", err)
	}
}

// release unpins the cache on a host and drops the host's state.
func (cc *cacheController) release(ctx context.Context, c *api.ImageCache, hostID string) bool {
	cl, err := cc.hub.Client(hostID)
	if err == nil {
		err = hostCall(ctx, cl, http.MethodDelete, "/host/v1/imagecaches/"+c.ID, nil, nil)
	}
	if err != nil {
		cc.log.Warn("release image cache on host", "cache", c.ID, "host", hostID, "err", err)
		return false
	}
	_, err = cc.store.UpdateImageCache(ctx, c.ID, func(c *api.ImageCache) error {
		out := c.HostStates[:0]
		for _, hs := range c.HostStates {
			if hs.HostID != hostID {
				out = append(out, hs)
			}
		}
		c.HostStates = out
		return nil
	})
	return err == nil
}

// deleting releases the cache on the hosts here; the leader removes the
// record once no alive host holds it.
func (cc *cacheController) deleting(ctx context.Context, c *api.ImageCache, alive, connected map[string]bool, leader bool) error {
	left := 0
	for _, hs := range c.HostStates {
		if !alive[hs.HostID] {
			continue // a host that comes back unpins at its next sync (see hostapi GET)
		}
		if connected[hs.HostID] && !cc.isInflight(c.ID, hs.HostID) && cc.release(ctx, c, hs.HostID) {
			continue
		}
		left++
	}
	if left > 0 || !leader {
		return nil
	}
	cc.log.Info("image cache deleted", "cache", c.ID, "name", c.Name)
	return cc.store.DeleteImageCache(ctx, c)
}

// sweep unpins, on the hosts connected here, caches that no longer exist
// (deleted while the host was away).
func (cc *cacheController) sweep(ctx context.Context, caches []*api.ImageCache) {
	live := map[string]bool{}
	for _, c := range caches {
		if c.Status != api.ImageCacheDeleting {
			live[c.ID] = true
		}
	}
	for _, h := range cc.hub.ConnectedHosts() {
		cl, err := cc.hub.Client(h)
		if err != nil {
			continue
		}
		var pins map[string][]string
		if err := hostCall(ctx, cl, http.MethodGet, "/host/v1/imagecaches", nil, &pins); err != nil {
			continue
		}
		for id := range pins {
			if !live[id] && !cc.isInflight(id, h) {
				if err := hostCall(ctx, cl, http.MethodDelete, "/host/v1/imagecaches/"+id, nil, nil); err == nil {
					cc.log.Info("released a stale image cache on host", "cache", id, "host", h)
				}
			}
		}
	}
}

// cachePreferences maps the image cache ids of pending groups to the hosts
// where the cache is Ready; it reads the caches only when a group has one.
func cachePreferences(ctx context.Context, st *store.Store, pending []*api.Group) map[string][]string {
	for _, g := range pending {
		if g.Spec.ImageCacheID != "" {
			caches, err := recentCaches(ctx, st)
			if err != nil {
				return nil
			}
			return preferredHosts(caches)
		}
	}
	return nil
}

// recentCaches lists the image caches, from a copy at most a second old:
// creates and scheduling rounds read them for every group, and caches
// change seldom (a new Ready cache is matched within a second).
func recentCaches(ctx context.Context, st *store.Store) ([]*api.ImageCache, error) {
	cacheList.mu.Lock()
	defer cacheList.mu.Unlock()
	if e, ok := cacheList.m[st]; ok && time.Since(e.at) < time.Second {
		return e.caches, nil
	}
	caches, err := st.ListImageCaches(ctx)
	if err != nil {
		return nil, err
	}
	if cacheList.m == nil {
		cacheList.m = map[*store.Store]cacheListEntry{}
	}
	cacheList.m[st] = cacheListEntry{at: time.Now(), caches: caches}
	return caches, nil
}

type cacheListEntry struct {
	at     time.Time
	caches []*api.ImageCache
}

var cacheList struct {
	mu sync.Mutex
	m  map[*store.Store]cacheListEntry
}
