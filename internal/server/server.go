// Package server is skiff's control plane: the native REST API (and, later,
// the ECI-compatible front) over one service layer, the hub that host
// agents dial into, and the leader-only controllers (scheduler with
// pre-placement, host liveness, the warm-pool planner: pool.go). All state lives in etcd through package store; a replica can
// be killed at any moment and another (or the same, restarted) carries on.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/pki"
	"github.com/skiffhq/skiff/internal/scheduler"
	"github.com/skiffhq/skiff/internal/server/eci"
	"github.com/skiffhq/skiff/internal/store"
	"github.com/skiffhq/skiff/internal/tenancy"
)

// Config configures a server replica.
type Config struct {
	DataDir string
	// Listen is the API address (HTTP); AgentListen the agents' (mTLS).
	Listen      string
	AgentListen string
	// EtcdEndpoints selects an external etcd cluster; empty embeds one.
	EtcdEndpoints []string
	// EtcdClientURL and EtcdPeerURL are the embedded etcd's addresses.
	EtcdClientURL string
	EtcdPeerURL   string
	// ClusterCIDR is split into one /20 per host for pod IPs.
	ClusterCIDR string
	Policy      string
	// ClientConfigPath, when set, receives the admin client config.
	ClientConfigPath string
	// AdvertiseHosts are extra names or IPs for the agent port's certificate.
	AdvertiseHosts []string
	// AdvertiseAPI is the API address other replicas reach this one at
	// (default: the listen address).
	AdvertiseAPI string
	// PriceTablePath is a JSON api.PriceTable (default: tenancy.DefaultPrices).
	PriceTablePath string
	// SpotReclaimNotice is the warning ahead of a spot reclaim (default 3m).
	SpotReclaimNotice time.Duration
	// Region is the region the ECI front reports (default "skiff").
	Region string
	// Pool configures the create history, the demand forecast and the
	// warm-pool planner (pool.go).
	Pool   PoolConfig
	Logger *slog.Logger
}

// Server is one control-plane replica.
type Server struct {
	cfg   Config
	log   *slog.Logger
	ready chan struct{}

	// Set once ready.
	APIAddr   string
	AgentAddr string
	JoinToken string
	CAPEM     []byte
	// EtcdURL is the embedded etcd's client URL, when embedded.
	EtcdURL string

	leading atomic.Bool
}

// New validates cfg and returns a server that Run starts.
func New(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("a data directory is required (--data-dir)")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:7440"
	}
	if cfg.AgentListen == "" {
		cfg.AgentListen = "127.0.0.1:7441"
	}
	if cfg.EtcdClientURL == "" {
		cfg.EtcdClientURL = "http://127.0.0.1:2379"
	}
	if cfg.EtcdPeerURL == "" {
		cfg.EtcdPeerURL = "http://127.0.0.1:2380"
	}
	if cfg.ClusterCIDR == "" {
		cfg.ClusterCIDR = "10.64.0.0/12"
	}
	if _, err := netip.ParsePrefix(cfg.ClusterCIDR); err != nil {
		return nil, fmt.Errorf("--cluster-cidr %q: %w", cfg.ClusterCIDR, err)
	}
	if _, err := scheduler.ParsePolicy(cfg.Policy); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Server{cfg: cfg, log: cfg.Logger, ready: make(chan struct{})}, nil
}

// Ready is closed once the server serves.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Leading reports whether this replica is the elected leader.
func (s *Server) Leading() bool { return s.leading.Load() }

// Run serves until ctx ends, then shuts down cleanly.
func (s *Server) Run(ctx context.Context) error {
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	endpoints := s.cfg.EtcdEndpoints
	if len(endpoints) == 0 {
		emb, err := store.StartEmbedded(ctx, store.EmbeddedConfig{
			Dir: filepath.Join(s.cfg.DataDir, "etcd"), ClientURL: s.cfg.EtcdClientURL, PeerURL: s.cfg.EtcdPeerURL, Logger: s.log,
		})
		if err != nil {
			return err
		}
		defer emb.Close()
		endpoints = []string{emb.ClientURL}
		s.EtcdURL = emb.ClientURL
		s.log.Info("embedded etcd started", "url", emb.ClientURL, "dir", filepath.Join(s.cfg.DataDir, "etcd"))
	}
	cli, err := store.Dial(ctx, endpoints)
	if err != nil {
		return err
	}
	defer cli.Close()
	st := store.New(cli, "")

	leases := &leaseLog{path: filepath.Join(s.cfg.DataDir, "leases")}
	if n := leases.revokeStale(ctx, cli); n > 0 {
		s.log.Info("revoked leases left by this replica's previous run", "count", n)
	}
	ca, token, err := s.bootstrap(ctx, st)
	if err != nil {
		return err
	}
	s.JoinToken = token
	s.CAPEM = ca.CertPEM

	host, _, _ := net.SplitHostPort(s.cfg.AgentListen)
	hostname, _ := os.Hostname()
	serverCert, err := ca.ServerCert(append([]string{host, hostname}, s.cfg.AdvertiseHosts...))
	if err != nil {
		return err
	}
	prefix, _ := netip.ParsePrefix(s.cfg.ClusterCIDR)
	policy, _ := scheduler.ParsePolicy(s.cfg.Policy)
	ctl := &controller{store: st, log: s.log.With("part", "controller"), policy: policy, replica: hostname + "/" + s.cfg.Listen, kick: make(chan struct{}, 1), leases: leases}
	hub := &Hub{store: st, ca: ca, joinToken: token, log: s.log.With("part", "hub"), sessions: map[string]*agentSession{},
		cidrs: &cidrAllocator{store: st, cluster: prefix.Masked()}, onChange: ctl.wake, leases: leases}
	prices, err := loadPriceTable(s.cfg.PriceTablePath)
	if err != nil {
		return err
	}
	ten := tenancy.New(st, tenancy.Config{Prices: prices, ReclaimNotice: s.cfg.SpotReclaimNotice})
	ctl.ten = ten
	poolCfg := s.cfg.Pool.withDefaults()
	history := newHistoryRecorder(st, poolCfg)
	ctl.planner = &planner{store: st, hub: hub, cfg: poolCfg, log: s.log.With("part", "pool"), now: time.Now, view: ctl.hostView}
	svc := &Service{store: st, hub: hub, kick: ctl.wake, ten: ten, history: history, place: ctl.preplace}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "skiff_server_leader", Help: "1 when this replica is the elected leader."}, func() float64 {
		if s.leading.Load() {
			return 1
		}
		return 0
	}))
	reg.MustRegister(poolCollector{hub}) // pool.go
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "skiff_groups_preplaced_total",
		Help: "Groups the leader placed at create (pre-placement), without waiting for a scheduling round."}, func() float64 {
		return float64(ctl.preplaced.Load())
	}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "skiff_agents_connected", Help: "Host agents connected to this replica."}, func() float64 {
		return float64(len(hub.ConnectedHosts()))
	}))
	tmp := filepath.Join(s.cfg.DataDir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return err
	}
	ah := &apiHandler{svc: svc, auth: newAuthenticator(st), hub: hub, log: s.log.With("part", "api"), metrics: newHTTPMetrics(reg), tmpDir: tmp}
	mux := http.NewServeMux()
	ah.routes(mux, reg)
	// The ECI-compatible front answers at "/" of the same address.
	mux.Handle("/", eci.New(eci.Config{Backend: &eciBackend{svc: svc, ten: ten}, Keys: eciKeys{ten}, Tokens: st,
		ImageCaches: eciImageCaches(svc), Region: s.cfg.Region, Logger: s.log.With("part", "eci"), NewID: newID}))

	apiLn, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another skiff running? pick another with --listen)", s.cfg.Listen, err)
	}
	agentLn, err := net.Listen("tcp", s.cfg.AgentListen)
	if err != nil {
		apiLn.Close()
		return fmt.Errorf("listen on %s for agents: %w (pick another with --agent-listen)", s.cfg.AgentListen, err)
	}
	s.APIAddr = apiLn.Addr().String()
	s.AgentAddr = agentLn.Addr().String()
	hub.apiAddr = s.cfg.AdvertiseAPI
	if hub.apiAddr == "" {
		hub.apiAddr = s.APIAddr
	}

	apiSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	agentSrv := &http.Server{Handler: hub.Handler(), TLSConfig: hub.TLSConfig(serverCert), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 3)
	go func() { errc <- apiSrv.Serve(apiLn) }()
	go func() { errc <- agentSrv.ServeTLS(agentLn, "", "") }()

	if s.cfg.ClientConfigPath != "" {
		if err := s.writeClientConfig(ctx, st); err != nil {
			return err
		}
	}

	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctl.run(cctx, func(b bool) { s.leading.Store(b) })
	}()
	go newCacheController(st, hub, s.log.With("part", "imagecache")).run(cctx, s.leading.Load) // imagecache.go
	historyDone := make(chan struct{})
	go func() { defer close(historyDone); history.run(cctx) }()
	s.log.Info("skiff server ready", "api", "http://"+s.APIAddr, "agents", s.AgentAddr)
	close(s.ready)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-errc:
		runErr = fmt.Errorf("server stopped: %w", err)
	}
	ccancel()
	<-done
	<-historyDone
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = apiSrv.Shutdown(sctx)
	_ = agentSrv.Close()
	hub.mu.Lock()
	for _, as := range hub.sessions {
		as.sess.Close()
	}
	hub.mu.Unlock()
	return runErr
}

// bootstrap makes the cluster CA, the join token and the admin account on
// first start; later starts (and other replicas) read them.
func (s *Server) bootstrap(ctx context.Context, st *store.Store) (*pki.CA, string, error) {
	_, caRec, err := pki.NewCA()
	if err != nil {
		return nil, "", err
	}
	stored, err := st.PutClusterIfAbsent(ctx, "ca", caRec)
	if err != nil {
		return nil, "", fmt.Errorf("bootstrap CA: %w", err)
	}
	ca, err := pki.LoadCA(stored)
	if err != nil {
		return nil, "", err
	}
	tok := pki.JoinToken{Secret: pki.RandomHex(16), Fingerprint: ca.Fingerprint()}
	storedTok, err := st.PutClusterIfAbsent(ctx, "jointoken", []byte(tok.String()))
	if err != nil {
		return nil, "", fmt.Errorf("bootstrap join token: %w", err)
	}
	if _, err := st.GetAccount(ctx, "admin"); isNotFound(err) {
		now := time.Now().UTC()
		key := &store.AccessKey{ID: "AK" + pki.RandomHex(10), Secret: pki.RandomHex(20), AccountID: "admin", CreatedAt: now}
		err := st.CreateAccount(ctx, &store.Account{ID: "admin", Name: "admin", Admin: true, CreatedAt: now}, key)
		if err != nil && !errors.Is(err, store.ErrConflict) {
			return nil, "", err
		}
		if err == nil {
			if _, err := st.PutClusterIfAbsent(ctx, "adminkey", []byte(key.ID)); err != nil {
				return nil, "", err
			}
			s.log.Info("created the admin account", "accessKeyId", key.ID)
		}
	} else if err != nil {
		return nil, "", err
	}
	return ca, string(storedTok), nil
}

// writeClientConfig writes the admin's client config for the CLI.
func (s *Server) writeClientConfig(ctx context.Context, st *store.Store) error {
	kid, err := st.GetCluster(ctx, "adminkey")
	if err != nil {
		return fmt.Errorf("admin key: %w", err)
	}
	key, err := st.GetAccessKey(ctx, string(kid))
	if err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(s.APIAddr)
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	cfg := api.ClientConfig{Endpoint: "http://" + net.JoinHostPort(host, port), AccessKeyID: key.ID, AccessKeySecret: key.Secret}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.MkdirAll(filepath.Dir(s.cfg.ClientConfigPath), 0o700); err != nil {
		return err
	}
	tmp := s.cfg.ClientConfigPath + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write client config: %w", err)
	}
	if err := os.Rename(tmp, s.cfg.ClientConfigPath); err != nil {
		return err
	}
	s.log.Info("wrote client config", "path", s.cfg.ClientConfigPath)
	return nil
}
