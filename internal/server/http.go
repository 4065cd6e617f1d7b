package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/store"
)

// maxBody bounds request bodies of ordinary calls.
const maxBody = 8 << 20

type ctxKey int

const (
	callerKey ctxKey = iota
	requestIDKey
)

func callerFrom(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey).(Caller)
	return c
}

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

// api is the native REST front.
type apiHandler struct {
	svc     *Service
	auth    *authenticator
	hub     *Hub
	log     *slog.Logger
	metrics *httpMetrics
	tmpDir  string
}

type httpMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "skiff_api_requests_total", Help: "API requests by route and status code."}, []string{"route", "code"}),
		latency:  prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "skiff_api_request_seconds", Help: "API request latency by route.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"route"}),
	}
	reg.MustRegister(m.requests, m.latency)
	return m
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

type route struct {
	pattern string
	h       handlerFunc
	// stream: the body is not read up front; the handler verifies the
	// declared body hash itself.
	stream bool
}

// apiRoutes lists every signed route of the native API; openapi.json
// documents each of them (a test checks).
func (a *apiHandler) apiRoutes() []route {
	return append([]route{
		{pattern: "POST /v1/groups", h: a.createGroup},
		{pattern: "POST /v1/groups:batch", h: a.createGroups}, // batch.go
		{pattern: "GET /v1/groups", h: a.listGroups},
		{pattern: "GET /v1/groups/{id}", h: a.getGroup},
		{pattern: "DELETE /v1/groups/{id}", h: a.deleteGroup},
		{pattern: "PATCH /v1/groups/{id}", h: a.updateGroup}, // update.go
		{pattern: "POST /v1/groups/{id}/restart", h: a.restartGroup},
		{pattern: "GET /v1/groups/{id}/events", h: a.events},
		{pattern: "GET /v1/groups/{id}/wait", h: a.wait},
		{pattern: "GET /v1/groups/{id}/logs", h: a.proxyToHost("logs")},
		{pattern: "POST /v1/groups/{id}/exec", h: a.proxyToHost("exec")},
		{pattern: "GET /v1/groups/{id}/exec/ws", h: a.proxyToHost("exec/ws")},
		{pattern: "GET /v1/groups/{id}/attach/ws", h: a.proxyToHost("attach/ws")},
		{pattern: "GET /v1/groups/{id}/metrics", h: a.proxyToHost("metrics")},
		{pattern: "PUT /v1/groups/{id}/volumes/{name}", h: a.updateVolume}, // volumes.go
		{pattern: "GET /v1/watch", h: a.watch},
		{pattern: "GET /v1/hosts", h: a.hosts},
		{pattern: "GET /v1/images", h: a.images},
		{pattern: "POST /v1/images/import", h: a.importImage, stream: true},
		// Registry pulls and image caches (imagecache.go).
		{pattern: "POST /v1/images/pull", h: a.pullImage},
		{pattern: "POST /v1/imagecaches", h: a.createImageCache},
		{pattern: "GET /v1/imagecaches", h: a.listImageCaches},
		{pattern: "GET /v1/imagecaches/{id}", h: a.getImageCache},
		{pattern: "PUT /v1/imagecaches/{id}", h: a.updateImageCache},
		{pattern: "DELETE /v1/imagecaches/{id}", h: a.deleteImageCache},
	}, a.tenancyRoutes()...)
}

func (a *apiHandler) routes(mux *http.ServeMux, gatherer prometheus.Gatherer) {
	for _, rt := range a.apiRoutes() {
		mux.Handle(rt.pattern, a.wrap(rt))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openAPIDoc)
	})
	mux.Handle("/v1/", a.wrap(route{pattern: "/v1/", h: func(w http.ResponseWriter, r *http.Request) error {
		return errdefs.Userf(errdefs.ErrNotFound, fmt.Sprintf("no route %s %s; see /openapi.json", r.Method, r.URL.Path))
	}}))
}

// statusRecorder remembers the status code for metrics.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// wrap authenticates, reads and hashes the body, runs the handler and
// renders its error.
func (a *apiHandler) wrap(rt route) http.Handler {
	name := rt.pattern
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rid := newID("req-")
		ctx := context.WithValue(r.Context(), requestIDKey, rid)
		w.Header().Set(api.HeaderRequestID, rid)
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				a.log.Error("handler panic", "route", name, "panic", p, "request", rid)
				a.writeError(rec, ctx, fmt.Errorf("panic: %v", p))
			}
			code := rec.code
			if code == 0 {
				code = http.StatusOK
			}
			a.metrics.requests.WithLabelValues(name, strconv.Itoa(code)).Inc()
			a.metrics.latency.WithLabelValues(name).Observe(time.Since(start).Seconds())
		}()
		bodyHash := api.EmptyBodySHA256
		if rt.stream {
			bodyHash = r.Header.Get(api.HeaderBodySHA256)
		} else if r.Body != nil {
			b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
			if err != nil {
				a.writeError(rec, ctx, errdefs.Invalid("cannot read request body: "+err.Error()))
				return
			}
			if len(b) > maxBody {
				a.writeError(rec, ctx, errdefs.Userf(errdefs.ErrTooLarge, fmt.Sprintf("request body is larger than %d bytes", maxBody)))
				return
			}
			sum := sha256.Sum256(b)
			bodyHash = hex.EncodeToString(sum[:])
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		caller, err := a.auth.verify(ctx, r, bodyHash)
		if err != nil {
			a.writeError(rec, ctx, err)
			return
		}
		ctx = context.WithValue(ctx, callerKey, caller)
		if err := rt.h(rec, r.WithContext(ctx)); err != nil {
			a.writeError(rec, ctx, err)
		}
	})
}

func (a *apiHandler) writeError(w http.ResponseWriter, ctx context.Context, err error) {
	status, code := errdefs.Class(err)
	msg := errdefs.Message(err)
	if status >= 500 {
		a.log.Error("request failed", "request", requestID(ctx), "err", err)
	}
	if rec, ok := w.(*statusRecorder); ok && rec.code != 0 {
		return // headers are out; nothing more can be said
	}
	writeJSON(w, status, api.Error{Code: code, Message: msg, RequestID: requestID(ctx)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	v = redactForAPI(v) // registry passwords never leave the server (imagecache.go)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// decodeStrict decodes JSON rejecting unknown fields and trailing data.
func decodeStrict(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errdefs.Invalid("malformed request body: " + err.Error())
	}
	if dec.More() {
		return errdefs.Invalid("malformed request body: trailing data after the JSON object")
	}
	return nil
}

// DecodeCreateRequest parses and validates a create body. It is the
// decoder the fuzz test exercises.
func DecodeCreateRequest(b []byte) (*api.CreateGroupRequest, error) {
	var req api.CreateGroupRequest
	if err := decodeStrict(bytes.NewReader(b), &req); err != nil {
		return nil, err
	}
	if err := req.Validate(); err != nil {
		return nil, errdefs.Invalid(err.Error())
	}
	return &req, nil
}

func (a *apiHandler) createGroup(w http.ResponseWriter, r *http.Request) error {
	b, _ := io.ReadAll(r.Body)
	req, err := DecodeCreateRequest(b)
	if err != nil {
		return err
	}
	g, created, err := a.svc.CreateGroup(r.Context(), callerFrom(r.Context()), req)
	if err != nil {
		return err
	}
	status := http.StatusCreated
	if !created {
		status = http.StatusOK
	}
	writeJSON(w, status, g)
	return nil
}

func (a *apiHandler) listGroups(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	o := ListOptions{Name: q.Get("name"), NextToken: q.Get("nextToken"), IDs: q["id"]}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return errdefs.Invalid("limit must be a positive number")
		}
		o.Limit = n
	}
	st, err := ParseStatuses(q.Get("status"))
	if err != nil {
		return err
	}
	o.Statuses = st
	if o.Labels, err = parseLabelFilters(q["label"]); err != nil {
		return err
	}
	page, err := a.svc.ListGroups(r.Context(), callerFrom(r.Context()), o)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

func parseLabelFilters(vals []string) (map[string]string, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, v := range vals {
		for _, kv := range strings.Split(v, ",") {
			k, val, _ := strings.Cut(kv, "=")
			if k == "" {
				return nil, errdefs.Invalid(fmt.Sprintf("label filter %q: want key=value or key", kv))
			}
			out[k] = val
		}
	}
	return out, nil
}

func (a *apiHandler) getGroup(w http.ResponseWriter, r *http.Request) error {
	g, err := a.svc.GetGroup(r.Context(), callerFrom(r.Context()), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, g)
	return nil
}

func (a *apiHandler) deleteGroup(w http.ResponseWriter, r *http.Request) error {
	force, err := parseBool(r.URL.Query().Get("force"))
	if err != nil {
		return err
	}
	var grace *int64
	if v := r.URL.Query().Get("gracePeriodSeconds"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > api.MaxGracePeriod {
			return errdefs.Invalid(fmt.Sprintf("gracePeriodSeconds %q: want a whole number of seconds from 0 to %d", v, api.MaxGracePeriod))
		}
		grace = &n
	}
	g, err := a.svc.DeleteGroupGrace(r.Context(), callerFrom(r.Context()), r.PathValue("id"), force, grace)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, g)
	return nil
}

func (a *apiHandler) restartGroup(w http.ResponseWriter, r *http.Request) error {
	g, err := a.svc.RestartGroup(r.Context(), callerFrom(r.Context()), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, g)
	return nil
}

func (a *apiHandler) events(w http.ResponseWriter, r *http.Request) error {
	evs, err := a.svc.Events(r.Context(), callerFrom(r.Context()), r.PathValue("id"))
	if err != nil {
		return err
	}
	if evs == nil {
		evs = []api.Event{}
	}
	writeJSON(w, http.StatusOK, api.List[api.Event]{Items: evs, Total: len(evs)})
	return nil
}

func (a *apiHandler) wait(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	st, err := ParseStatuses(q.Get("status"))
	if err != nil {
		return err
	}
	if len(st) == 0 {
		return errdefs.Invalid("status is required, e.g. status=Running")
	}
	timeout := 30 * time.Second
	if s := q.Get("timeout"); s != "" {
		if timeout, err = time.ParseDuration(s); err != nil || timeout <= 0 || timeout > 10*time.Minute {
			return errdefs.Invalid("timeout must be a duration between 1ms and 10m, e.g. 30s")
		}
	}
	g, err := a.svc.Wait(r.Context(), callerFrom(r.Context()), r.PathValue("id"), st, timeout)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, g)
	return nil
}

// proxyToHost forwards a call to the agent of the group's host, which runs
// the container: logs, exec (one-shot and WebSocket) and metrics.
func (a *apiHandler) proxyToHost(op string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		g, err := a.svc.GetGroup(r.Context(), callerFrom(r.Context()), r.PathValue("id"))
		if err != nil {
			return err
		}
		if g.HostID == "" {
			return errdefs.Userf(errdefs.ErrIncorrectStat, fmt.Sprintf("group %s is %s and not on a host yet", g.Name, g.Status))
		}
		cl, err := a.hub.Client(g.HostID)
		if err != nil {
			return a.forward(w, r, g.HostID, err)
		}
		target := &url.URL{Scheme: "http", Host: "agent"}
		rp := &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.Out.URL.Scheme = target.Scheme
				pr.Out.URL.Host = target.Host
				pr.Out.URL.Path = "/host/v1/groups/" + g.ID + "/" + op
				pr.Out.URL.RawPath = ""
				pr.Out.Host = "agent"
				pr.Out.Header.Del("Authorization")
			},
			Transport:     cl.Transport,
			FlushInterval: -1,
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				a.writeError(w, r.Context(), errdefs.Userf(errdefs.ErrUnavailable, "host "+g.HostID+" did not answer: "+err.Error()))
			},
		}
		rp.ServeHTTP(w, r)
		return nil
	}
}

// headerForwarded marks a call one replica passed to another, so that it
// is never passed on again.
const headerForwarded = "X-Skiff-Forwarded"

// forward passes a host-bound call to the replica the host's agent is
// connected to. The caller's signature stays valid there: it covers the
// same method, path, query and body, and each replica keeps its own nonces.
func (a *apiHandler) forward(w http.ResponseWriter, r *http.Request, hostID string, cause error) error {
	h, err := a.svc.store.GetHost(r.Context(), hostID)
	if err != nil || h.Server == "" || h.Server == a.hub.apiAddr || r.Header.Get(headerForwarded) != "" {
		return cause
	}
	if alive, err := a.svc.store.AliveHosts(r.Context()); err != nil || !alive[hostID] {
		return cause
	}
	target, err := url.Parse("http://" + h.Server)
	if err != nil {
		return cause
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = target.Host
			pr.Out.Header.Set(headerForwarded, "1")
		},
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			a.writeError(w, r.Context(), cause)
		},
	}
	rp.ServeHTTP(w, r)
	return nil
}

func (a *apiHandler) watch(w http.ResponseWriter, r *http.Request) error {
	c := callerFrom(r.Context())
	q := r.URL.Query()
	labels, err := parseLabelFilters(q["label"])
	if err != nil {
		return err
	}
	name := q.Get("name")
	ctx := r.Context()
	// Start from the current revision; a client that needs the full state
	// lists first and watches after.
	_, rev, err := a.svc.store.ListGroups(ctx)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	if fl != nil {
		fl.Flush()
	}
	enc := json.NewEncoder(w)
	for ev := range a.svc.store.WatchGroups(ctx, rev) {
		g := ev.Group
		if g.AccountID != c.AccountID || (name != "" && g.Name != name) || !labelsMatch(g, labels) {
			continue
		}
		if enc.Encode(api.WatchEvent{Type: ev.Type, Group: g.Redacted()}) != nil {
			return nil
		}
		if fl != nil {
			fl.Flush()
		}
	}
	return nil
}

func (a *apiHandler) hosts(w http.ResponseWriter, r *http.Request) error {
	hosts, err := a.svc.store.ListHosts(r.Context())
	if err != nil {
		return err
	}
	groups, _, err := a.svc.store.ListGroups(r.Context())
	if err != nil {
		return err
	}
	alive, err := a.svc.store.AliveHosts(r.Context())
	if err != nil {
		return err
	}
	snap, _ := snapshot(hosts, alive, groups)
	items := make([]api.Host, len(hosts))
	for i, h := range hosts {
		items[i] = *h
		items[i].Allocated = snap[i].Allocated
		if !alive[h.ID] {
			items[i].State = api.HostNotReady
		}
	}
	pools, err := a.svc.store.ListPoolStatus(r.Context())
	if err != nil {
		return err
	}
	targets, err := a.svc.store.ListPoolTargets(r.Context())
	if err != nil {
		return err
	}
	withPools(items, pools, targets) // pool.go
	writeJSON(w, http.StatusOK, api.List[api.Host]{Items: items, Total: len(items)})
	return nil
}

// images lists the images on every connected host, merged by reference.
func (a *apiHandler) images(w http.ResponseWriter, r *http.Request) error {
	merged := map[string]*api.Image{}
	var order []string
	for _, hostID := range a.hub.ConnectedHosts() {
		cl, err := a.hub.Client(hostID)
		if err != nil {
			continue
		}
		var list []api.Image
		if err := hostCall(r.Context(), cl, http.MethodGet, "/host/v1/images", nil, &list); err != nil {
			a.log.Warn("list images", "host", hostID, "err", err)
			continue
		}
		for _, im := range list {
			m, ok := merged[im.Ref]
			if !ok {
				cp := im
				cp.Hosts = nil
				m = &cp
				merged[im.Ref] = m
				order = append(order, im.Ref)
			}
			m.Hosts = append(m.Hosts, hostID)
		}
	}
	items := make([]api.Image, 0, len(order))
	for _, ref := range order {
		items = append(items, *merged[ref])
	}
	writeJSON(w, http.StatusOK, api.List[api.Image]{Items: items, Total: len(items)})
	return nil
}

// importImage spools the uploaded tarball, checks it against the signed
// body hash, then hands it to every connected host.
func (a *apiHandler) importImage(w http.ResponseWriter, r *http.Request) error {
	want := r.Header.Get(api.HeaderBodySHA256)
	f, err := os.CreateTemp(a.tmpDir, "import-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	h := sha256.New()
	const maxImport = 64 << 30
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r.Body, maxImport+1))
	if err != nil {
		return errdefs.Invalid("upload interrupted: " + err.Error())
	}
	if n > maxImport {
		return errdefs.Userf(errdefs.ErrTooLarge, "image tarball is larger than 64 GiB")
	}
	if hex.EncodeToString(h.Sum(nil)) != want {
		return errdefs.Userf(errdefs.ErrUnauthorized, "uploaded body does not match the signed "+api.HeaderBodySHA256)
	}
	hosts := a.hub.ConnectedHosts()
	if len(hosts) == 0 {
		return errdefs.Userf(errdefs.ErrUnavailable, "no host is connected to take the image; start an agent first")
	}
	res := api.ImportResult{Images: []api.Image{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	for _, hostID := range hosts {
		wg.Add(1)
		go func(hostID string) {
			defer wg.Done()
			stat := api.HostImportStat{HostID: hostID}
			imgs, err := a.pushImage(r.Context(), hostID, f.Name(), n)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				stat.Error = err.Error()
				if firstErr == nil {
					firstErr = err
				}
			} else if len(res.Images) == 0 {
				res.Images = imgs
			}
			res.Hosts = append(res.Hosts, stat)
		}(hostID)
	}
	wg.Wait()
	if len(res.Images) == 0 && firstErr != nil {
		return firstErr
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (a *apiHandler) pushImage(ctx context.Context, hostID, path string, size int64) ([]api.Image, error) {
	cl, err := a.hub.Client(hostID)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent/host/v1/images/import", f)
	if err != nil {
		return nil, err
	}
	req.ContentLength = size
	resp, err := cl.Do(req)
	if err != nil {
		return nil, errdefs.Userf(errdefs.ErrUnavailable, "host "+hostID+": "+err.Error())
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, hostError(resp)
	}
	var imgs []api.Image
	if err := json.NewDecoder(resp.Body).Decode(&imgs); err != nil {
		return nil, err
	}
	return imgs, nil
}

// hostCall makes a JSON call to an agent.
func hostCall(ctx context.Context, cl *http.Client, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, rd)
	if err != nil {
		return err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return errdefs.Userf(errdefs.ErrUnavailable, err.Error())
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return hostError(resp)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// hostError turns an agent's error reply (an api.Error body) into an error
// of the right class.
func hostError(resp *http.Response) error {
	var e api.Error
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &e) != nil || e.Message == "" {
		e.Message = strings.TrimSpace(string(b))
	}
	class := errdefs.ErrUnavailable
	switch resp.StatusCode {
	case http.StatusBadRequest:
		class = errdefs.ErrInvalid
	case http.StatusNotFound:
		class = errdefs.ErrNotFound
	case http.StatusConflict:
		class = errdefs.ErrIncorrectStat
	}
	return errdefs.Userf(class, e.Message)
}

func isNotFound(err error) bool {
	return errors.Is(err, errdefs.ErrNotFound) || errors.Is(err, store.ErrNotFound)
}
