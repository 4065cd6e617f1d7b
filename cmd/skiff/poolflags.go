package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spf13/pflag"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/agent"
	"github.com/skiffhq/skiff/internal/server"
)

// serverPoolFlags configure the create history, the forecast and the
// warm-pool planner.
type serverPoolFlags struct {
	bucket     time.Duration
	season     int
	lead       int
	maxPerHost int
}

func (f *serverPoolFlags) add(fl *pflag.FlagSet) {
	fl.DurationVar(&f.bucket, "forecast-bucket", time.Minute, "create-history bucket width for the warm-pool forecast (a benchmark may compress a day: 1s)")
	fl.IntVar(&f.season, "forecast-season", 1440, "buckets in one season of the forecast's periodicity (1440 one-minute buckets: a day)")
	fl.IntVar(&f.lead, "forecast-lead", 2, "buckets ahead the warm-pool planner provisions for")
	fl.IntVar(&f.maxPerHost, "pool-max-per-host", 128, "most prepared sandboxes the planner asks of one host (0: the forecast sets no pool targets)")
}

func (f *serverPoolFlags) config() (server.PoolConfig, error) {
	if f.bucket < 100*time.Millisecond {
		return server.PoolConfig{}, fmt.Errorf("--forecast-bucket %s: at least 100ms", f.bucket)
	}
	if f.season < 1 || f.season > 100000 {
		return server.PoolConfig{}, fmt.Errorf("--forecast-season %d: from 1 to 100000 buckets", f.season)
	}
	if f.lead < 1 || f.lead > f.season+1000 {
		return server.PoolConfig{}, fmt.Errorf("--forecast-lead %d: at least 1 bucket", f.lead)
	}
	if f.maxPerHost < 0 {
		return server.PoolConfig{}, errors.New("--pool-max-per-host: 0 or more")
	}
	return server.PoolConfig{Bucket: f.bucket, Season: f.season, Lead: f.lead, MaxPerHost: f.maxPerHost}, nil
}

// agentPoolFlags configure the agent's warm pool and its metrics.
type agentPoolFlags struct {
	size          string
	metricsListen string
	startSlots    int
}

func (f *agentPoolFlags) add(fl *pflag.FlagSet) {
	fl.StringVar(&f.size, "pool-size", "", "warm pool this host always holds, CLASS=N[,CLASS=N…] (classes: c0.25 c0.5 c1 c2 c4 c8; the control plane's forecast may ask for more)")
	fl.StringVar(&f.metricsListen, "metrics-listen", "", "serve the agent's Prometheus metrics (warm pool) at http://ADDR/metrics; no auth")
	fl.IntVar(&f.startSlots, "start-slots", 0, "sandbox creates and container starts run at once (0: twice the CPUs; -1: no limit); more only lengthens run queues and starves the API on the same host")
}

func (f *agentPoolFlags) apply(cfg *agent.Config) error {
	if f.startSlots < -1 {
		return errors.New("--start-slots: -1 (no limit), 0 (twice the CPUs) or more")
	}
	cfg.StartSlots = f.startSlots
	if f.size == "" {
		return nil
	}
	t, err := api.ParsePoolTargets(f.size)
	if err != nil {
		return fmt.Errorf("--pool-size: %w", err)
	}
	cfg.PoolSize = t
	return nil
}

// serveAgentMetrics serves the agent's metrics when --metrics-listen is set.
func (f *agentPoolFlags) serve(ag *agent.Agent, log *slog.Logger) error {
	if f.metricsListen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", f.metricsListen)
	if err != nil {
		return fmt.Errorf("--metrics-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", ag.Metrics())
	go func() { _ = (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(ln) }()
	log.Info("agent metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return nil
}
