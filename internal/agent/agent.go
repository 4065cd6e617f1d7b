// Package agent is the host agent: it joins the control plane, keeps one
// mutual-TLS session to it, runs the container groups assigned to its host
// through a sandbox runtime, and reports what it sees.
//
// Stopping or crashing the agent never stops a group: workloads are not tied
// to the agent's lifetime, and on start the agent re-adopts every sandbox its
// runtime recovers, then reconciles them against the assignments the server
// sends (orphans are torn down, missing groups are started).
package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/hostapi"
	"github.com/skiffhq/skiff/internal/image"
	"github.com/skiffhq/skiff/internal/pki"
	"github.com/skiffhq/skiff/internal/sandbox"
)

// Version is reported to the server.
var Version = "dev"

// Config configures an agent.
type Config struct {
	// Server is the server's agent address, host:port.
	Server    string
	JoinToken string
	DataDir   string
	Name      string
	Zone      string
	Labels    map[string]string
	// PodCIDR overrides the range the server would hand out.
	PodCIDR string
	// Capacity overrides what the agent reads off the machine.
	Capacity api.Resources
	// NewRuntime builds the sandbox runtime once the pod range is known.
	NewRuntime func(podCIDR string) (sandbox.Runtime, error)
	// Backoff bounds restart back-off (defaults 1s and 60s); image pulls
	// back off five times as long.
	BackoffBase, BackoffMax time.Duration
	// Registry is how image pulls reach registries (insecure registries,
	// CAs, timeouts, retries).
	Registry image.RegistryConfig
	// ImageGCThreshold, when set, prunes least recently used images that no
	// group uses and no image cache pins, once the store holds more.
	ImageGCThreshold int64
	// PoolSize is the agent's own warm-pool target per shape class: the
	// pool holds at least this many whatever the control plane asks.
	PoolSize api.PoolTargets
	// StartSlots bounds the sandbox creates and container starts that run
	// at once (slots.go): 0 twice the CPUs, negative no limit.
	StartSlots int
	Logger     *slog.Logger
}

// Agent is a running host agent.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	id     identity
	images *image.Store
	rt     sandbox.Runtime

	mu      sync.Mutex
	runners map[string]*runner
	// recovered holds sandboxes found at start that no assignment has
	// claimed yet.
	recovered map[string]sandbox.SandboxState

	reporter *reporter
	pulls    *pulls
	// pool is the warm-pool manager (pool.go); nil when the runtime has no
	// sandbox.Pool.
	pool     *poolManager
	slots    chan struct{} // start slots (slots.go)
	prepull  *prepuller    // the images of predicted groups (prepull.go)
	metrics  *prometheus.Registry
	ready    chan struct{}
	readyOne sync.Once
}

type identity struct {
	HostID  string `json:"hostId"`
	Cert    string `json:"cert"`
	Key     string `json:"key"`
	CA      string `json:"ca"`
	PodCIDR string `json:"podCidr,omitempty"`
	Server  string `json:"server"`
}

// New checks cfg.
func New(cfg Config) (*Agent, error) {
	if cfg.Server == "" {
		return nil, errors.New("--server is required: the server's agent address, host:port")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("--data-dir is required")
	}
	if cfg.NewRuntime == nil {
		return nil, errors.New("agent: no sandbox runtime configured")
	}
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
		cfg.Name = strings.ToLower(cfg.Name)
	}
	if err := api.ValidateName(cfg.Name); err != nil {
		return nil, fmt.Errorf("host name: %w (set one with --name)", err)
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = time.Second
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 60 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Agent{cfg: cfg, log: cfg.Logger, slots: newStartSlots(cfg.StartSlots), runners: map[string]*runner{}, recovered: map[string]sandbox.SandboxState{}, ready: make(chan struct{}), pulls: newPulls(),
		metrics: prometheus.NewRegistry()}, nil
}

// Metrics serves the agent's Prometheus metrics (the warm pool's).
func (a *Agent) Metrics() http.Handler {
	return promhttp.HandlerFor(a.metrics, promhttp.HandlerOpts{})
}

// Ready is closed once the agent has synced with the server the first time.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// HostID is the agent's host id (after Run joined).
func (a *Agent) HostID() string { return a.id.HostID }

// Run joins if needed, then keeps the session to the server until ctx ends.
// Groups keep running after Run returns.
func (a *Agent) Run(ctx context.Context) error {
	if err := os.MkdirAll(a.cfg.DataDir, 0o700); err != nil {
		return err
	}
	if err := a.loadOrJoin(ctx); err != nil {
		return err
	}
	a.log = a.log.With("host", a.id.HostID)
	var err error
	if a.images, err = image.Open(filepath.Join(a.cfg.DataDir, "images"), image.WithRegistry(a.cfg.Registry), image.WithLogger(a.log.With("part", "images"))); err != nil {
		return fmt.Errorf("image store: %w", err)
	}
	defer a.images.Close()
	go a.runImageGC(ctx)
	a.reporter = newReporter(a.log)

	// The runtime needs the pod range, which the first hello settles when
	// neither the flag nor an earlier run fixed it.
	backoff := time.Second
	for {
		err := a.session(ctx)
		if ctx.Err() != nil {
			break
		}
		a.log.Warn("lost the server; reconnecting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		if ctx.Err() != nil {
			break
		}
		backoff = min(backoff*2, 10*time.Second)
		if err == nil {
			backoff = time.Second
		}
	}
	a.mu.Lock()
	for _, r := range a.runners {
		r.detach()
	}
	a.mu.Unlock()
	if a.pool != nil {
		a.pool.drainOnStop() // pool.go
	}
	if a.rt != nil {
		return a.rt.Close()
	}
	return nil
}

func (a *Agent) identityPath() string { return filepath.Join(a.cfg.DataDir, "identity.json") }

func (a *Agent) loadOrJoin(ctx context.Context) error {
	b, err := os.ReadFile(a.identityPath())
	if err == nil {
		if err := json.Unmarshal(b, &a.id); err != nil {
			return fmt.Errorf("corrupt %s: %w (remove it to join again)", a.identityPath(), err)
		}
		if a.cfg.PodCIDR != "" && a.id.PodCIDR != "" && a.cfg.PodCIDR != a.id.PodCIDR {
			return fmt.Errorf("--pod-cidr %s differs from the range this host already uses (%s)", a.cfg.PodCIDR, a.id.PodCIDR)
		}
		return nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if a.cfg.JoinToken == "" {
		return errors.New("this host has not joined yet: pass --join-token (printed by `skiff up` / `skiff server`)")
	}
	tok, err := pki.ParseJoinToken(a.cfg.JoinToken)
	if err != nil {
		return err
	}
	keyPEM, csrPEM, err := pki.NewAgentKey(a.cfg.Name)
	if err != nil {
		return err
	}
	// Trust the server only if its chain ends at the CA the token names.
	tlsCfg := &tls.Config{InsecureSkipVerify: true, VerifyConnection: func(cs tls.ConnectionState) error {
		certs := cs.PeerCertificates
		if len(certs) == 0 {
			return errors.New("server sent no certificate")
		}
		root := certs[len(certs)-1]
		if pki.Fingerprint(root.Raw) != tok.Fingerprint {
			return errors.New("server's CA does not match the join token's fingerprint")
		}
		pool := x509.NewCertPool()
		pool.AddCert(root)
		_, err := certs[0].Verify(x509.VerifyOptions{Roots: pool})
		return err
	}}
	body, _ := json.Marshal(hostapi.JoinRequest{Token: a.cfg.JoinToken, Name: a.cfg.Name, CSR: string(csrPEM)})
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}, Timeout: 30 * time.Second}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+a.cfg.Server+"/join", strings.NewReader(string(body)))
	resp, err := cl.Do(req)
	if err != nil {
		return fmt.Errorf("join %s: %w", a.cfg.Server, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("join refused by %s: %s", a.cfg.Server, strings.TrimSpace(string(msg)))
	}
	var rep hostapi.JoinReply
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		return err
	}
	a.id = identity{HostID: rep.HostID, Cert: rep.Cert, Key: string(keyPEM), CA: rep.CA, PodCIDR: a.cfg.PodCIDR, Server: a.cfg.Server}
	a.log.Info("joined the cluster", "host", rep.HostID)
	return a.saveIdentity()
}

func (a *Agent) saveIdentity() error {
	b, _ := json.MarshalIndent(a.id, "", "  ")
	tmp := a.identityPath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, a.identityPath())
}

// session dials the server, runs one yamux session and returns when it
// breaks.
func (a *Agent) session(ctx context.Context) error {
	cert, err := tls.X509KeyPair([]byte(a.id.Cert), []byte(a.id.Key))
	if err != nil {
		return fmt.Errorf("host certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(a.id.CA))
	host, _, _ := net.SplitHostPort(a.cfg.Server)
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	if net.ParseIP(host) != nil || host == "" {
		tlsCfg.ServerName = "skiff-server"
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 15 * time.Second}, Config: tlsCfg}
	conn, err := d.DialContext(ctx, "tcp", a.cfg.Server)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(conn, "GET /agent/v1/connect HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: skiff-yamux\r\n\r\n", a.cfg.Server)
	if err != nil {
		conn.Close()
		return err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		conn.Close()
		return fmt.Errorf("server refused the session: %s %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	ycfg := yamux.DefaultConfig()
	ycfg.LogOutput = io.Discard
	ycfg.KeepAliveInterval = 5 * time.Second
	ycfg.ConnectionWriteTimeout = 15 * time.Second
	ycfg.AcceptBacklog = 1024
	sess, err := yamux.Client(&readerConn{Conn: conn, r: br}, ycfg)
	if err != nil {
		conn.Close()
		return err
	}
	defer sess.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.CloseChan():
			cancel()
		case <-sctx.Done():
			sess.Close()
		}
	}()
	srv := &http.Client{Transport: &http.Transport{
		DialContext:         func(context.Context, string, string) (net.Conn, error) { return sess.Open() },
		MaxIdleConnsPerHost: 16,
	}}

	// Hello: settle the pod range, then bring the runtime up (first time).
	var hr hostapi.HelloReply
	if err := call(sctx, srv, http.MethodPost, "/agent/v1/hello", a.hello(), &hr); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	if a.rt == nil {
		if a.id.PodCIDR == "" {
			a.id.PodCIDR = hr.PodCIDR
			if err := a.saveIdentity(); err != nil {
				return err
			}
		}
		if err := a.startRuntime(ctx); err != nil {
			return err
		}
	}
	hostSrv := &http.Server{Handler: a.hostAPI(), ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = hostSrv.Serve(sess) }()
	defer hostSrv.Close()
	a.log.Info("connected to the server", "server", a.cfg.Server, "podCidr", a.id.PodCIDR)

	go a.reporter.run(sctx, srv)
	if a.pool != nil {
		go a.reportPool(sctx, srv)
	}
	return a.followAssignments(sctx, srv)
}

type readerConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (a *Agent) hello() hostapi.Hello {
	capacity := a.cfg.Capacity
	if capacity.MilliCPU == 0 {
		capacity.MilliCPU = int64(runtime.NumCPU()) * 1000
	}
	if capacity.Memory == 0 {
		capacity.Memory = hostMemory() * 9 / 10
	}
	if capacity.Groups == 0 {
		capacity.Groups = 4000
	}
	rtName := ""
	if a.rt != nil {
		rtName = a.rt.Name()
	}
	return hostapi.Hello{Name: a.cfg.Name, Address: localAddress(a.cfg.Server), Zone: a.cfg.Zone, Labels: a.cfg.Labels,
		Capacity: capacity, Runtime: rtName, Version: Version, PodCIDR: a.id.PodCIDR}
}

// hostMemory reads MemTotal from /proc/meminfo.
func hostMemory() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 1 << 30
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 1 << 30
}

// localAddress is the address this host uses to reach the server.
func localAddress(server string) string {
	c, err := net.DialTimeout("udp", server, time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	host, _, _ := net.SplitHostPort(c.LocalAddr().String())
	return host
}

func (a *Agent) startRuntime(ctx context.Context) error {
	rt, err := a.cfg.NewRuntime(a.id.PodCIDR)
	if err != nil {
		return fmt.Errorf("sandbox runtime: %w", err)
	}
	states, err := rt.Recover(ctx)
	if err != nil {
		rt.Close()
		return fmt.Errorf("recover sandboxes: %w", err)
	}
	a.rt = rt
	a.mu.Lock()
	for _, st := range states {
		a.recovered[st.ID] = st
	}
	a.mu.Unlock()
	if len(states) > 0 {
		a.log.Info("re-adopting sandboxes from the last run", "count", len(states))
	}
	go a.dispatchExits(ctx)
	if p, ok := rt.(sandbox.Pool); ok {
		a.pool = newPoolManager(p, a.cfg.PoolSize, a.log.With("part", "pool"))
		a.pool.register(a.metrics)
		go func() { defer close(a.pool.done); a.pool.run(ctx) }()
		a.prepull = newPrepuller(a.images, a.pool.idleFor, a.log.With("part", "prepull"))
		a.metrics.MustRegister(a.prepull.pulls)
		go a.prepull.run(ctx)
	} else if len(a.cfg.PoolSize) > 0 {
		a.log.Warn("the sandbox runtime has no warm pool; --pool-size is ignored", "runtime", rt.Name())
	}
	return nil
}

// reportPool sends the pool's state every two seconds and takes the
// control plane's targets from the reply.
func (a *Agent) reportPool(ctx context.Context, srv *http.Client) {
	for {
		var rep hostapi.PoolReply
		err := call(ctx, srv, http.MethodPost, "/agent/v1/pool", hostapi.PoolReport{Classes: a.pool.status()}, &rep)
		if err == nil {
			if a.pool.setServerTargets(rep.Targets) {
				a.log.Info("warm-pool targets from the control plane", "targets", rep.Targets.String())
			}
			if a.prepull != nil {
				a.prepull.set(rep.Images)
			}
		} else if ctx.Err() == nil {
			a.log.Debug("pool report failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

func (a *Agent) dispatchExits(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-a.rt.Exits():
			if !ok {
				return
			}
			a.mu.Lock()
			r := a.runners[ev.SandboxID]
			a.mu.Unlock()
			if r != nil {
				r.exited(ev)
			}
		}
	}
}

// followAssignments applies the server's assignment stream until it breaks.
func (a *Agent) followAssignments(ctx context.Context, srv *http.Client) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://server/agent/v1/assignments", nil)
	resp, err := srv.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("assignments: %s", resp.Status)
	}
	dec := json.NewDecoder(resp.Body)
	seen := map[string]bool{}
	synced := false
	for {
		var as hostapi.Assignment
		if err := dec.Decode(&as); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("assignment stream: %w", err)
		}
		switch as.Type {
		case "SYNCED":
			a.sync(ctx, seen)
			synced = true
			a.readyOne.Do(func() { close(a.ready) })
		case "ADDED", "MODIFIED":
			if !synced {
				seen[as.Group.ID] = true
			}
			a.assign(ctx, as.Group)
		case "DELETED":
			a.unassign(as.Group.ID)
		}
	}
}

// assign starts or updates the runner of a group.
func (a *Agent) assign(ctx context.Context, g *api.Group) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r, ok := a.runners[g.ID]; ok {
		r.update(g)
		return
	}
	rec, adopted := a.recovered[g.ID]
	delete(a.recovered, g.ID)
	var prev *sandbox.SandboxState
	if adopted {
		prev = &rec
	}
	r := newRunner(a, g, prev)
	a.pulls.noteGroup(g)
	a.runners[g.ID] = r
	go r.run()
}

// unassign tears down a group whose record is gone (force delete).
func (a *Agent) unassign(id string) {
	a.mu.Lock()
	r := a.runners[id]
	a.mu.Unlock()
	if r != nil {
		r.remove()
	}
}

// sync tears down whatever runs here without an assignment: groups deleted
// while the agent was away, or never meant for this host.
func (a *Agent) sync(ctx context.Context, assigned map[string]bool) {
	a.mu.Lock()
	var orphans []string
	for id := range a.recovered {
		if !assigned[id] {
			orphans = append(orphans, id)
			delete(a.recovered, id)
		}
	}
	var gone []*runner
	for id, r := range a.runners {
		if !assigned[id] {
			gone = append(gone, r)
		}
	}
	a.mu.Unlock()
	for _, id := range orphans {
		a.log.Info("removing orphan sandbox (no assignment)", "group", id)
		if err := a.rt.RemoveSandbox(ctx, id); err != nil {
			a.log.Error("remove orphan", "group", id, "err", err)
		}
	}
	for _, r := range gone {
		r.remove()
	}
}

func (a *Agent) forget(id string, r *runner) {
	a.mu.Lock()
	if a.runners[id] == r {
		delete(a.runners, id)
		a.pulls.release(id)
	}
	a.mu.Unlock()
}

// call is a JSON call to the server over the session.
func call(ctx context.Context, cl *http.Client, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://server"+path, rd)
	if err != nil {
		return err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(msg)))
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}
