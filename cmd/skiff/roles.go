package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
	"github.com/skiffhq/skiff/internal/agent"
	"github.com/skiffhq/skiff/internal/network"
	"github.com/skiffhq/skiff/internal/sandbox"
	"github.com/skiffhq/skiff/internal/sandbox/linux"
	"github.com/skiffhq/skiff/internal/server"
)

// addRoleCommands adds the long-running roles: up (all-in-one), server and
// agent.
func addRoleCommands(root *cobra.Command) {
	root.AddGroup(&cobra.Group{ID: "roles", Title: "Running skiff:"})
	for _, c := range []*cobra.Command{newUpCmd(), newServerCmd(), newAgentCmd()} {
		c.GroupID = "roles"
		root.AddCommand(c)
	}
}

type serverFlags struct {
	dataDir, listen, agentListen, etcdEndpoints, etcdClient, etcdPeer, clusterCIDR, policy, logLevel string
	advertiseAPI                                                                                     string
	pprof                                                                                            string
	priceTable, region                                                                               string
	spotNotice                                                                                       time.Duration
	advertiseHosts                                                                                   []string
	pool                                                                                             serverPoolFlags // poolflags.go
}

func (f *serverFlags) add(cmd *cobra.Command, defDir string) {
	fl := cmd.Flags()
	fl.StringVar(&f.dataDir, "data-dir", defDir, "where state lives (etcd, images, sandboxes)")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:7440", "API address, HOST:PORT")
	fl.StringVar(&f.agentListen, "agent-listen", "127.0.0.1:7441", "address agents dial (mutual TLS), HOST:PORT")
	fl.StringVar(&f.etcdEndpoints, "etcd-endpoints", "", "external etcd cluster, comma-separated (default: embedded etcd)")
	fl.StringVar(&f.etcdClient, "etcd-client-url", "http://127.0.0.1:2379", "embedded etcd client URL")
	fl.StringVar(&f.etcdPeer, "etcd-peer-url", "http://127.0.0.1:2380", "embedded etcd peer URL")
	fl.StringVar(&f.clusterCIDR, "cluster-cidr", "10.64.0.0/12", "range split into one /20 of pod IPs per host")
	fl.StringVar(&f.policy, "policy", "spread", "placement policy: spread or pack")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&f.advertiseAPI, "advertise-api", "", "API address other replicas reach this one at (default: --listen)")
	fl.StringArrayVar(&f.advertiseHosts, "advertise-host", nil, "extra DNS name or IP agents dial this server by (repeatable)")
	fl.StringVar(&f.priceTable, "price-table", "", "JSON price table: {\"currency\",\"onDemand\":{\"vcpuHour\",\"gibHour\"},\"spot\":{...}} (default: built in)")
	fl.DurationVar(&f.spotNotice, "spot-reclaim-notice", 3*time.Minute, "warning (event SpotToBeReleased) ahead of reclaiming a spot group")
	fl.StringVar(&f.region, "region", "skiff", "region id the ECI-compatible API reports")
	fl.StringVar(&f.pprof, "pprof", "", "serve Go's profiler (net/http/pprof) on this address, e.g. 127.0.0.1:6060; no auth")
	f.pool.add(fl)
}

func (f *serverFlags) config(log *slog.Logger) server.Config {
	var eps []string
	for _, e := range strings.Split(f.etcdEndpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	return server.Config{DataDir: f.dataDir, Listen: f.listen, AgentListen: f.agentListen, EtcdEndpoints: eps,
		EtcdClientURL: f.etcdClient, EtcdPeerURL: f.etcdPeer, ClusterCIDR: f.clusterCIDR, Policy: f.policy, Logger: log,
		AdvertiseAPI: f.advertiseAPI, AdvertiseHosts: f.advertiseHosts,
		PriceTablePath: f.priceTable, SpotReclaimNotice: f.spotNotice, Region: f.region}
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

type agentFlags struct {
	server, token, dataDir, name, zone, podCIDR, runtime string
	labels                                               []string
	cpu                                                  string
	memory                                               string
	maxGroups                                            int
	// Image pulls (internal/image).
	insecureRegistries []string
	registryCA         string
	imageGCThreshold   string
	pool               agentPoolFlags // poolflags.go
}

func (f *agentFlags) add(cmd *cobra.Command, standalone bool) {
	fl := cmd.Flags()
	if standalone {
		fl.StringVar(&f.server, "server", "", "the server's agent address, HOST:PORT (its --agent-listen)")
		fl.StringVar(&f.token, "join-token", "", "join token printed by `skiff up` / `skiff server` (first start only)")
		fl.StringVar(&f.dataDir, "data-dir", "/var/lib/skiff-agent", "where the agent keeps its identity, images and sandboxes")
	}
	fl.StringVar(&f.name, "name", "", "host name (default: the machine's hostname)")
	fl.StringVar(&f.zone, "zone", "", "zone this host is in")
	fl.StringArrayVar(&f.labels, "label", nil, "host label KEY=VALUE (repeatable)")
	fl.StringVar(&f.podCIDR, "pod-cidr", "", "pod IP range of this host (default: assigned by the server)")
	fl.StringVar(&f.runtime, "runtime", "linux", "sandbox runtime: linux")
	fl.StringVar(&f.cpu, "cpu", "", "schedulable vCPU (default: all cores)")
	fl.StringVar(&f.memory, "memory", "", "schedulable memory, e.g. 16Gi (default: 90% of RAM)")
	fl.IntVar(&f.maxGroups, "max-groups", 4000, "most groups this host runs")
	fl.StringArrayVar(&f.insecureRegistries, "insecure-registry", nil, "registry HOST[:PORT] reached over plain HTTP or unverified TLS (repeatable)")
	fl.StringVar(&f.registryCA, "registry-ca", "", "PEM file of CA certificates that registry certificates may chain to (besides the system's)")
	fl.StringVar(&f.imageGCThreshold, "image-gc-threshold", "", "prune least recently used unused images when the image store exceeds this size, e.g. 50Gi")
	f.pool.add(fl)
}

func (f *agentFlags) config(log *slog.Logger) (agent.Config, error) {
	cfg := agent.Config{Server: f.server, JoinToken: f.token, DataDir: f.dataDir, Name: f.name, Zone: f.zone, PodCIDR: f.podCIDR, Logger: log}
	cfg.Labels = map[string]string{}
	for _, l := range f.labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return cfg, fmt.Errorf("--label %q: want KEY=VALUE", l)
		}
		cfg.Labels[k] = v
	}
	if f.cpu != "" {
		m, err := api.ParseCPU(f.cpu)
		if err != nil {
			return cfg, fmt.Errorf("--cpu: %w", err)
		}
		cfg.Capacity.MilliCPU = m
	}
	if f.memory != "" {
		q, err := api.ParseQuantity(f.memory)
		if err != nil {
			return cfg, fmt.Errorf("--memory: %w", err)
		}
		cfg.Capacity.Memory = int64(q)
	}
	cfg.Capacity.Groups = f.maxGroups
	if err := f.registryConfig(&cfg); err != nil { // pullflags.go
		return cfg, err
	}
	if err := f.pool.apply(&cfg); err != nil {
		return cfg, err
	}
	if f.runtime != "linux" {
		return cfg, fmt.Errorf("--runtime %q: only linux is available", f.runtime)
	}
	dataDir := f.dataDir
	cfg.NewRuntime = func(podCIDR string) (sandbox.Runtime, error) {
		return newLinuxRuntime(dataDir, podCIDR, log)
	}
	return cfg, nil
}

// newLinuxRuntime wires the real sandbox runtime to the pod network.
func newLinuxRuntime(dataDir, podCIDR string, log *slog.Logger) (sandbox.Runtime, error) {
	netw, err := network.New(network.Config{StateDir: filepath.Join(dataDir, "network"), CIDR: podCIDR, NAT: true, Logger: log.With("part", "network")})
	if err != nil {
		return nil, err
	}
	// A cgroup parent per data dir keeps several agents on one machine
	// (test fleets) apart.
	parent := "skiff/" + shortHash(dataDir)
	return linux.New(linux.Config{StateDir: filepath.Join(dataDir, "sandboxes"), CgroupParent: parent, Network: podNetwork{netw}, Logger: log.With("part", "sandbox")})
}

// podNetwork adapts the network manager to the runtime's Publisher.
type podNetwork struct{ *network.Manager }

func (n podNetwork) Publish(ctx context.Context, id string, ports []sandbox.Port) error {
	out := make([]network.Port, len(ports))
	for i, p := range ports {
		out[i] = network.Port{HostPort: p.HostPort, ContainerPort: p.ContainerPort, Protocol: p.Protocol, HostIP: p.HostIP}
	}
	return n.Manager.Publish(ctx, id, out)
}

func shortHash(s string) string {
	var h uint32 = 2166136261
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return fmt.Sprintf("%08x", h)
}

func newUpCmd() *cobra.Command {
	var sf serverFlags
	var af agentFlags
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run an all-in-one skiff: server, embedded etcd and a local agent",
		Long: `Runs the control plane with an embedded etcd and one local host agent, in
the foreground. Ctrl-C stops it cleanly; container groups keep running and
are re-adopted on the next 'skiff up' with the same --data-dir.

It creates the admin account on first start and writes the client config
to $SKIFF_CONFIG or ~/.skiff/config.json, so the other verbs just work.`,
		Args: noArgs(""),
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := newLogger(sf.logLevel)
			if err != nil {
				return err
			}
			if os.Geteuid() != 0 {
				return errors.New("skiff up runs sandboxes with namespaces and cgroups: run it as root")
			}
			startPprof(sf.pprof, log)
			scfg := sf.config(log.With("role", "server"))
			scfg.ClientConfigPath = client.DefaultConfigPath()
			if scfg.Pool, err = sf.pool.config(); err != nil {
				return err
			}
			srv, err := server.New(scfg)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			var wg sync.WaitGroup
			errc := make(chan error, 2)
			wg.Add(1)
			go func() { defer wg.Done(); errc <- srv.Run(ctx) }()
			select {
			case <-srv.Ready():
			case err := <-errc:
				return err
			}
			af.server = srv.AgentAddr
			af.token = srv.JoinToken
			af.dataDir = filepath.Join(sf.dataDir, "agent")
			if af.name == "" {
				af.name = "local"
			}
			acfg, err := af.config(log.With("role", "agent"))
			if err != nil {
				cancel()
				wg.Wait()
				return err
			}
			ag, err := agent.New(acfg)
			if err == nil {
				err = af.pool.serve(ag, log)
			}
			if err != nil {
				cancel()
				wg.Wait()
				return err
			}
			wg.Add(1)
			go func() { defer wg.Done(); errc <- ag.Run(ctx) }()
			select {
			case <-ag.Ready():
				fmt.Fprintf(cmd.ErrOrStderr(), `
skiff is up.
  API:          http://%s
  client config %s
  join token    %s
  add a host:   skiff agent --server %s --join-token <token> --data-dir /var/lib/skiff-agent
Try:  skiff image import busybox-oci.tar && skiff run -d --name web busybox -- httpd -f -p 8080
Ctrl-C stops skiff; groups keep running and are re-adopted at the next start.

`, srv.APIAddr, scfg.ClientConfigPath, srv.JoinToken, srv.AgentAddr)
			case err := <-errc:
				cancel()
				wg.Wait()
				return err
			case <-time.After(60 * time.Second):
				log.Warn("the local agent has not synced with the server after 60s; still trying")
			case <-ctx.Done():
			}
			var first error
			select {
			case <-ctx.Done():
			case err := <-errc:
				first = err
			}
			cancel()
			wg.Wait()
			if first != nil && !errors.Is(first, context.Canceled) {
				return first
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "skiff stopped; container groups are still running.")
			return nil
		},
	}
	sf.add(cmd, "/var/lib/skiff")
	af.add(cmd, false)
	return cmd
}

func newServerCmd() *cobra.Command {
	var sf serverFlags
	var clientCfg string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a control-plane replica (embedded etcd, or --etcd-endpoints)",
		Args:  noArgs(""),
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := newLogger(sf.logLevel)
			if err != nil {
				return err
			}
			cfg := sf.config(log)
			cfg.ClientConfigPath = clientCfg
			if cfg.Pool, err = sf.pool.config(); err != nil {
				return err
			}
			startPprof(sf.pprof, log)
			srv, err := server.New(cfg)
			if err != nil {
				return err
			}
			errc := make(chan error, 1)
			go func() { errc <- srv.Run(cmd.Context()) }()
			select {
			case <-srv.Ready():
				fmt.Fprintf(cmd.ErrOrStderr(), "skiff server ready: API http://%s, agents %s\njoin token: %s\n", srv.APIAddr, srv.AgentAddr, srv.JoinToken)
			case err := <-errc:
				return err
			}
			return <-errc
		},
	}
	sf.add(cmd, "/var/lib/skiff")
	cmd.Flags().StringVar(&clientCfg, "write-client-config", "", "write the admin client config to this path")
	return cmd
}

func newAgentCmd() *cobra.Command {
	var af agentFlags
	var logLevel string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a host agent that joins a server and runs its groups",
		Args:  noArgs(""),
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			if os.Geteuid() != 0 {
				return errors.New("skiff agent runs sandboxes with namespaces and cgroups: run it as root")
			}
			cfg, err := af.config(log)
			if err != nil {
				return err
			}
			ag, err := agent.New(cfg)
			if err != nil {
				return err
			}
			if err := af.pool.serve(ag, log); err != nil {
				return err
			}
			err = ag.Run(cmd.Context())
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	af.add(cmd, true)
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}
