package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/skiffhq/skiff/internal/kubelet"
)

// newKubeletCmd is `skiff kubelet`: a Kubernetes virtual node whose pods
// run as skiff container groups.
func newKubeletCmd(a *cli) *cobra.Command {
	var cfg kubelet.Config
	var capacity, logLevel, pprofAddr string
	cmd := &cobra.Command{
		Use:   "kubelet",
		Short: "Join a Kubernetes cluster as a virtual node that runs pods as container groups",
		Long: `Registers a Node (tainted virtual-kubelet.io/provider=skiff:NoSchedule) in the
cluster of --kubeconfig, keeps its Lease and status fresh, and runs every pod
bound to it as a skiff container group made through the client config
(--config). Pod status follows the groups through skiff's watch stream.
The kubelet API (logs, exec, attach, port-forward, stats) is served over
HTTPS on --node-ip:--port, authenticated and authorized by the apiserver.

Stopping it leaves the groups running; the next start reconciles: groups
whose pod is gone are deleted, pods without a group get one.`,
		Args: noArgs(""),
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			if cfg.NodeName == "" {
				return usagef(cmd, "--node-name is required")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			cfg.Skiff = c
			cfg.Logger = log.With("role", "kubelet")
			startPprof(pprofAddr, cfg.Logger)
			if capacity != "" {
				cfg.Capacity = corev1.ResourceList{}
				for _, kv := range strings.Split(capacity, ",") {
					k, v, ok := strings.Cut(kv, "=")
					q, err := resource.ParseQuantity(v)
					if !ok || err != nil {
						return usagef(cmd, "--capacity %q: want NAME=QUANTITY[,...], e.g. cpu=64,memory=256Gi,pods=1000", kv)
					}
					cfg.Capacity[corev1.ResourceName(k)] = q
				}
			}
			k, err := kubelet.New(cfg)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- k.Run(ctx) }()
			select {
			case <-k.Ready():
				fmt.Fprintf(cmd.ErrOrStderr(), "skiff kubelet: node %s ready; kubelet API on https://%s\n", cfg.NodeName, k.Addr)
			case err := <-errc:
				return err
			}
			err = <-errc
			if err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.KubeConfig, "kubeconfig", "", "kubeconfig of the cluster to join (default: in-cluster config)")
	fl.StringVar(&cfg.NodeName, "node-name", "", "name of the virtual Node (required)")
	fl.StringVar(&cfg.NodeIP, "node-ip", "", "the node's InternalIP, where the kubelet API listens (default: this host's primary address)")
	fl.IntVar(&cfg.Port, "port", 10250, "kubelet API port (0: any free port)")
	fl.StringVar(&cfg.ClientCAFile, "client-ca-file", "", "CA bundle for client certificates (the apiserver's --kubelet-client-certificate)")
	fl.StringVar(&cfg.RequestHeaderCAFile, "requestheader-client-ca-file", "", "CA bundle of the apiserver's front-proxy client certificate (for --serve-metrics-api)")
	fl.BoolVar(&cfg.ServeMetricsAPI, "serve-metrics-api", false, "register and serve the metrics.k8s.io API (kubectl top) for this node's pods")
	fl.StringVar(&cfg.TLSCertFile, "tls-cert-file", "", "kubelet API serving certificate (default: self-signed)")
	fl.StringVar(&cfg.TLSKeyFile, "tls-private-key-file", "", "key of --tls-cert-file")
	fl.StringVar(&cfg.PodAPIServer, "pod-apiserver", "", "apiserver URL given to pods (default: the kubeconfig's, loopback replaced by --node-ip)")
	fl.StringVar(&capacity, "capacity", "", "node capacity override, e.g. cpu=64,memory=256Gi,pods=1000 (default: skiff's Ready hosts)")
	fl.IntVar(&cfg.Workers, "workers", 128, "pods synced in parallel (each mostly waits on the apiserver: raise it for bursts of hundreds of pods)")
	fl.Float32Var(&cfg.KubeAPIQPS, "kube-api-qps", 1000, "requests per second to the apiserver (a burst of N pods costs about 3N)")
	fl.IntVar(&cfg.KubeAPIBurst, "kube-api-burst", 2000, "burst of requests to the apiserver above --kube-api-qps")
	fl.StringVar(&cfg.KubeletVersion, "kubelet-version", "v1.37.2", "kubelet version the node reports")
	fl.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&pprofAddr, "pprof", "", "serve Go's profiler (net/http/pprof) on this address, e.g. 127.0.0.1:6061; no auth")
	return cmd
}

// inGroup puts c under a help group.
func inGroup(id string, c *cobra.Command) *cobra.Command {
	c.GroupID = id
	return c
}
