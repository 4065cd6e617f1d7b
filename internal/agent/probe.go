package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/sandbox"
)

// Probes, as Kubernetes has them: a startup probe gates the other two; a
// failing liveness or startup probe kills the container (and the restart
// policy decides what next); readiness sets the container's Ready flag.
//
// Probing never blocks the runner's goroutine and costs nothing for
// containers without probes. The runner keeps each probe's next due time
// and folds it into the one timer of its select loop; a due probe runs in a
// short-lived goroutine that sends its outcome back as a closure over
// r.calls. At most one run of each probe is in flight.

// secondUnit is what one second of the API's probe, hook and grace fields
// lasts. Tests shrink it to keep probe periods short.
var secondUnit = time.Second

type probeKind uint8

const (
	startupProbe probeKind = iota
	livenessProbe
	readinessProbe
)

func (k probeKind) String() string {
	switch k {
	case startupProbe:
		return "Startup"
	case livenessProbe:
		return "Liveness"
	default:
		return "Readiness"
	}
}

// lifecycle is the pod-semantics state of a container's current instance:
// its probes, its postStart hook and whether it is being killed.
type lifecycle struct {
	// instance counts the container's starts; outcomes that arrive for an
	// older instance are dropped.
	instance int
	probes   []*prober // nil when the container has none
	started  bool      // the startup probe passed, or there is none
	ready    bool      // the readiness probe's settled result
	hooking  bool      // postStart runs
	// cancelHook aborts a running postStart hook.
	cancelHook context.CancelFunc
	stopping   bool   // a kill (preStop, then stop) is under way
	killMsg    string // why we killed it: the ended instance's message
	// warned remembers each probe kind's last Unhealthy event, to keep a
	// probe that keeps failing from flooding the event log.
	warned [3]warning
}

type warning struct {
	msg string
	at  time.Time
}

// repeatWarningAfter is how long an identical Unhealthy event is held back.
const repeatWarningAfter = 5 * time.Minute

// prober is one probe of one container instance.
type prober struct {
	kind      probeKind
	spec      *api.Probe
	next      time.Time
	inflight  bool
	successes int32
	failures  int32
}

func orDefault(v, def int32) int32 {
	if v > 0 {
		return v
	}
	return def
}

func (p *prober) period() time.Duration {
	return time.Duration(orDefault(p.spec.PeriodSeconds, 10)) * secondUnit
}

func (p *prober) timeout() time.Duration {
	return time.Duration(orDefault(p.spec.TimeoutSeconds, 1)) * secondUnit
}

func (p *prober) successThreshold() int32 {
	if p.kind != readinessProbe {
		return 1 // Kubernetes requires 1 for liveness and startup
	}
	return orDefault(p.spec.SuccessThreshold, 1)
}

func (p *prober) failureThreshold() int32 { return orDefault(p.spec.FailureThreshold, 3) }

// active says whether the probe runs now: the startup probe until it
// passes, the others after.
func (p *prober) active(l *lifecycle) bool {
	if p.kind == startupProbe {
		return !l.started
	}
	return l.started
}

// newInstance resets c's lifecycle state for an instance that started at
// startedAt: fresh probes, due after their initial delays.
func newInstance(c *ctr, startedAt time.Time) {
	l := &c.life
	if l.cancelHook != nil {
		l.cancelHook()
	}
	l.instance++
	l.probes = nil
	l.started = c.spec.StartupProbe == nil
	l.ready = false
	l.hooking, l.cancelHook, l.stopping, l.killMsg = false, nil, false, ""
	for _, k := range []probeKind{startupProbe, livenessProbe, readinessProbe} {
		spec := probeSpec(&c.spec, k)
		if spec == nil {
			continue
		}
		l.probes = append(l.probes, &prober{kind: k, spec: spec, next: startedAt.Add(time.Duration(spec.InitialDelaySeconds) * secondUnit)})
	}
}

func probeSpec(c *api.Container, k probeKind) *api.Probe {
	switch k {
	case startupProbe:
		return c.StartupProbe
	case livenessProbe:
		return c.LivenessProbe
	default:
		return c.ReadinessProbe
	}
}

// instanceEnded drops what belonged to the instance that just ended.
func instanceEnded(c *ctr) {
	l := &c.life
	if l.cancelHook != nil {
		l.cancelHook()
	}
	l.probes = nil
	l.hooking, l.cancelHook, l.stopping, l.ready = false, nil, false, false
}

// containerReady is the container's Ready flag.
func containerReady(c *ctr) bool {
	l := &c.life
	if !c.running || l.hooking || l.stopping || !l.started {
		return false
	}
	if c.spec.ReadinessProbe != nil {
		return l.ready
	}
	return true
}

// send hands f to the runner's goroutine; it is dropped once the runner
// has ended.
func (r *runner) send(f func()) {
	select {
	case r.calls <- f:
	case <-r.done:
	}
}

// probeStep launches the probes that are due and reports when the next one
// is.
func (r *runner) probeStep(soonest func(time.Time)) {
	now := time.Now()
	for _, c := range r.ctrs {
		l := &c.life
		if len(l.probes) == 0 || !c.running || l.hooking || l.stopping {
			continue
		}
		for _, p := range l.probes {
			if p.inflight || !p.active(l) {
				continue
			}
			if now.Before(p.next) {
				soonest(p.next)
				continue
			}
			p.inflight = true
			p.next = now.Add(p.period())
			r.launchProbe(c, p)
		}
	}
}

func (r *runner) launchProbe(c *ctr, p *prober) {
	name, inst, kind, ip := c.spec.Name, c.life.instance, p.kind, r.ip
	act := action{exec: p.spec.Exec, http: p.spec.HTTPGet, tcp: p.spec.TCPSocket}
	timeout := p.timeout()
	ctx := r.ctx
	go func() {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		out := r.probe(ctx, ip, name, act)
		if out.err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			out.err = fmt.Errorf("timed out after %s: %w", timeout, out.err)
		}
		r.send(func() { r.probeDone(name, inst, kind, out) })
	}()
}

// probeDone applies one probe outcome, on the runner's goroutine.
func (r *runner) probeDone(name string, inst int, kind probeKind, out outcome) {
	c := r.find(name)
	if c == nil || c.life.instance != inst {
		return // the instance it probed is gone
	}
	l := &c.life
	var p *prober
	for _, q := range l.probes {
		if q.kind == kind {
			p = q
		}
	}
	if p == nil {
		return
	}
	p.inflight = false
	if !c.running || l.stopping {
		return // being stopped: its health no longer matters
	}
	if out.err == nil {
		if out.warn != "" {
			r.warn(c, kind, "ProbeWarning", fmt.Sprintf("%s probe warning: %s", kind, out.warn))
		}
		p.failures = 0
		p.successes = min(p.successes+1, p.successThreshold())
		if p.successes < p.successThreshold() {
			return
		}
		switch kind {
		case startupProbe:
			l.started = true
		case readinessProbe:
			l.ready = true
		}
		return
	}
	p.successes = 0
	p.failures = min(p.failures+1, p.failureThreshold())
	msg := fmt.Sprintf("%s probe failed: %v", kind, out.err)
	r.warn(c, kind, "Unhealthy", msg)
	if p.failures < p.failureThreshold() {
		return
	}
	switch kind {
	case readinessProbe:
		l.ready = false
	case livenessProbe, startupProbe:
		p.failures = 0
		what := fmt.Sprintf("Container %s failed %s probe", c.spec.Name, strings.ToLower(kind.String()))
		if r.willRestart(c) {
			what += ", will be restarted"
		}
		r.kill(c, what, msg)
	}
}

// warn records a Warning event, holding back one identical to the last of
// its probe kind for a while.
func (r *runner) warn(c *ctr, kind probeKind, reason, msg string) {
	w := &c.life.warned[kind]
	key := reason + "\x00" + msg
	now := time.Now()
	if w.msg == key && now.Sub(w.at) < repeatWarningAfter {
		return
	}
	w.msg, w.at = key, now
	r.event("Warning", reason, c.spec.Name, "%s", msg)
}

// willRestart says whether the restart policy restarts c after a kill
// (which ends it with a non-zero code).
func (r *runner) willRestart(c *ctr) bool {
	return r.g.Spec.RestartPolicy != api.RestartNever
}

// action is a probe's or a hook's handler.
type action struct {
	exec *api.ExecAction
	http *api.HTTPGetAction
	tcp  *api.TCPSocketAction
}

func handlerAction(h *api.Handler) action {
	return action{exec: h.Exec, http: h.HTTPGet, tcp: h.TCPSocket}
}

// outcome is a probe's result: err says why it failed; warn is a caveat
// on a success.
type outcome struct {
	err  error
	warn string
}

// maxProbeOutput bounds what a probe's output or response body adds to a
// message.
const maxProbeOutput = 1024

// probe runs one probe action against a container, bounded by ctx.
func (r *runner) probe(ctx context.Context, ip, container string, a action) outcome {
	switch {
	case a.exec != nil:
		return outcome{err: r.execAction(ctx, container, a.exec.Command)}
	case a.http != nil:
		return httpProbe(ctx, ip, a.http)
	case a.tcp != nil:
		return outcome{err: tcpProbe(ctx, ip, a.tcp.Port)}
	}
	return outcome{err: errors.New("no exec, httpGet or tcpSocket action")}
}

// execAction runs a command in the container; it fails unless the command
// exits 0.
func (r *runner) execAction(ctx context.Context, container string, argv []string) error {
	out := limitedBuffer{max: maxProbeOutput}
	code, err := r.a.rt.Exec(ctx, r.id, container, sandbox.ExecConfig{Args: argv, Stdout: &out, Stderr: &out})
	if err != nil {
		return fmt.Errorf("command %q: %w", strings.Join(argv, " "), err)
	}
	if code != 0 {
		if o := strings.TrimSpace(out.String()); o != "" {
			return fmt.Errorf("command %q exited with %d: %s", strings.Join(argv, " "), code, o)
		}
		return fmt.Errorf("command %q exited with %d", strings.Join(argv, " "), code)
	}
	return nil
}

// probeTransport serves every HTTP probe and hook: no keep-alives (a probe
// is one request now and then) and no proxy; certificates are not checked,
// as Kubernetes does not check them for probes.
var probeTransport = &http.Transport{
	DisableKeepAlives: true,
	Proxy:             nil,
	TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // probes target the group's own endpoint
}

func probeURL(ip string, h *api.HTTPGetAction) string {
	scheme := strings.ToLower(h.Scheme)
	if scheme == "" {
		scheme = "http"
	}
	path := h.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	return scheme + "://" + net.JoinHostPort(ip, strconv.Itoa(h.Port)) + path
}

// httpGet makes the GET of a probe or hook. Redirects are followed on the
// same host only (at most 10); one elsewhere ends the request with its 3xx
// response, and redirected says so.
func httpGet(ctx context.Context, ip string, h *api.HTTPGetAction) (resp *http.Response, body string, redirected bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, probeURL(ip, h), nil)
	if err != nil {
		return nil, "", false, err
	}
	req.Header.Set("User-Agent", "skiff-probe/1")
	req.Header.Set("Accept", "*/*")
	cl := &http.Client{Transport: probeTransport, CheckRedirect: func(nr *http.Request, via []*http.Request) error {
		if nr.URL.Hostname() != ip || len(via) >= 10 {
			redirected = true
			return http.ErrUseLastResponse
		}
		return nil
	}}
	resp, err = cl.Do(req)
	if err != nil {
		return nil, "", false, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxProbeOutput))
	return resp, string(b), redirected, nil
}

// httpProbe succeeds on a 2xx or 3xx response.
func httpProbe(ctx context.Context, ip string, h *api.HTTPGetAction) outcome {
	resp, body, redirected, err := httpGet(ctx, ip, h)
	if err != nil {
		return outcome{err: err}
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		if body = strings.TrimSpace(body); body != "" {
			return outcome{err: fmt.Errorf("HTTP probe failed with statuscode: %d: %s", resp.StatusCode, body)}
		}
		return outcome{err: fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)}
	}
	if redirected {
		return outcome{warn: fmt.Sprintf("Probe terminated redirects, Response status: %s", resp.Status)}
	}
	return outcome{}
}

// tcpProbe succeeds when a TCP connection opens.
func tcpProbe(ctx context.Context, ip string, port int) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	return conn.Close()
}
