package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
	"github.com/skiffhq/skiff/internal/bench"
)

// newBenchCmd is `skiff bench`: benchmarks run from the outside against a
// running skiff (internal/bench).
func newBenchCmd(a *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure a running skiff (burst of creates)",
		Args:  noArgs(""),
	}
	cmd.AddCommand(newBenchBurstCmd(a))
	return cmd
}

func newBenchBurstCmd(a *cli) *cobra.Command {
	var (
		cfg                      bench.BurstConfig
		cpu, mem, pool, vs, cmdS string
		output, outFile, svgFile string
		peerImage                string
	)
	cmd := &cobra.Command{
		Use:   "burst",
		Short: "Create N groups at once and time them to Running, then tear them down",
		Long: `burst creates --count groups through the batch-create API, watches them
to Running, and reports first-call→all-Running, groups/s, create→Running
percentiles (the API's status times and the client's view), a single GET's
latency during the burst, host memory per group (when run on the host) and
the teardown time. With --vs runc it then starts the same number of
containers of the same rootfs with 'runc run -d' in a loop and prints the
ratio. Every group, sandbox and runc container it makes is removed unless
--keep.`,
		Args: noArgs(""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(cmd, output); err != nil {
				return err
			}
			c, err := api.ParseCPU(cpu)
			if err != nil {
				return usagef(cmd, "--cpu: %v", err)
			}
			cfg.CPU = api.CPU(c)
			m, err := api.ParseQuantity(mem)
			if err != nil {
				return usagef(cmd, "--memory: %v", err)
			}
			cfg.Memory = m
			switch pool {
			case "off", "":
			case "on":
				// Honest until internal/pool lands: every start is cold.
				return usagef(cmd, "--pool on: this skiff has no warm pool yet; every start is cold (--pool off)")
			default:
				return usagef(cmd, "--pool %q: want on or off", pool)
			}
			cfg.Pool = pool
			cfg.Command = strings.Fields(cmdS)
			if vs != "" {
				if vs != "runc" {
					return usagef(cmd, "--vs %q: only runc is supported", vs)
				}
				if peerImage == "" {
					return usagef(cmd, "--vs runc needs --peer-image, the OCI layout tarball the image was imported from (scripts/build-test-image.sh)")
				}
				cfg.Peer = &bench.PeerConfig{Runtime: vs, ImageTar: peerImage, Command: cfg.Command}
			}
			cfg.Log = a.err
			cl, err := a.benchClient()
			if err != nil {
				return err
			}
			res, err := bench.RunBurst(cmd.Context(), cl, cfg)
			if err != nil {
				return err
			}
			if outFile != "" {
				f, err := os.Create(outFile)
				if err != nil {
					return err
				}
				werr := jsonTo(f, res)
				if cerr := f.Close(); werr == nil {
					werr = cerr
				}
				if werr != nil {
					return werr
				}
			}
			if svgFile != "" {
				f, err := os.Create(svgFile)
				if err != nil {
					return err
				}
				werr := bench.WriteTimelineSVG(f, res)
				if cerr := f.Close(); werr == nil {
					werr = cerr
				}
				if werr != nil {
					return werr
				}
			}
			if output == outputJSON {
				tl, ptl := res.Timeline, res.PeerTimeline
				res.Timeline, res.PeerTimeline = nil, nil // in --out FILE; keep stdout readable
				defer func() { res.Timeline, res.PeerTimeline = tl, ptl }()
				return a.printJSON(res)
			}
			printBurst(a, res)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&cfg.Count, "count", 100, "groups to create")
	fl.IntVar(&cfg.Concurrency, "concurrency", 4, "batch-create calls in flight")
	fl.IntVar(&cfg.BatchSize, "batch", 100, "groups per batch-create call (at most 1000)")
	fl.StringVar(&cfg.Image, "image", "busybox", "image of every group")
	fl.StringVar(&cmdS, "command", "sleep 1000000", "the workload, space-separated")
	fl.StringVar(&cpu, "cpu", "0.01", "vCPU per group")
	fl.StringVar(&mem, "memory", "8Mi", "memory per group")
	fl.StringVar(&pool, "pool", "", "warm pool: on or off (default: the server's setting)")
	fl.BoolVar(&cfg.Keep, "keep", false, "leave the groups running (no teardown)")
	fl.StringVar(&vs, "vs", "", "also run the peer: runc")
	fl.StringVar(&peerImage, "peer-image", "", "OCI layout tarball the peer's rootfs is unpacked from (with --vs)")
	fl.DurationVar(&cfg.Timeout, "timeout", 0, "give up after this long (default 10m)")
	fl.StringVar(&outFile, "out", "", "also write the full JSON result (with the timeline) to FILE")
	fl.StringVar(&svgFile, "svg", "", "write a timeline plot (SVG) to FILE")
	addOutputFlag(cmd, &output)
	return cmd
}

// benchClient is a.client with a connection pool sized for a burst.
func (a *cli) benchClient() (*client.Client, error) {
	path := a.configPath
	if path == "" {
		path = client.DefaultConfigPath()
	}
	cfg, err := client.LoadConfig(path)
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.WithUserAgent("skiff-bench"), client.WithHTTPClient(bench.HTTPClient()))
	if err != nil {
		return nil, fmt.Errorf("client config %s: %w", path, err)
	}
	a.endpoint = c.Endpoint()
	return c, nil
}

func printBurst(a *cli, r *bench.BurstResult) {
	w := a.out
	fmt.Fprintf(w, "groups                 %d (%d failed), batches of %d, %d in flight, pool %s\n", r.Count, r.Failed, r.BatchSize, r.Concurrency, r.Pool)
	fmt.Fprintf(w, "first call→all Running %.2fs   (%.1f groups/s; create calls done at %.2fs)\n", r.AllRunningSeconds, r.GroupsPerSecond, r.CreateCallsSecond)
	fmt.Fprintf(w, "create→Running (API)   p50 %.0f ms  p90 %.0f ms  p99 %.0f ms\n", r.P50Ms, r.P90Ms, r.P99Ms)
	fmt.Fprintf(w, "create→Scheduled (API) p50 %.0f ms  p99 %.0f ms\n", r.SchedP50Ms, r.SchedP99Ms)
	fmt.Fprintf(w, "create→Running (client) p50 %.0f ms  p90 %.0f ms  p99 %.0f ms\n", r.ClientP50Ms, r.ClientP90Ms, r.ClientP99Ms)
	fmt.Fprintf(w, "GET during burst       p50 %.1f ms  p99 %.1f ms  (%d samples)\n", r.GetP50Ms, r.GetP99Ms, r.GetSamples)
	fmt.Fprintf(w, "host memory per group  %.0f KiB (MemTotal-MemAvailable, after minus before, over the groups)\n", float64(r.MemoryPerGroupBytes)/1024)
	if r.Kept {
		fmt.Fprintf(w, "teardown               skipped (--keep)\n")
	} else {
		fmt.Fprintf(w, "teardown               %.2fs\n", r.TeardownSeconds)
	}
	if r.Peer != "" {
		fmt.Fprintf(w, "peer %-17s %.2fs (%.1f/s), teardown %.2fs\n", r.Peer, r.PeerSeconds, r.PeerPerSecond, r.PeerTeardownSeconds)
		fmt.Fprintf(w, "ratio                  %.1f× (peer time / skiff time)\n", r.Ratio)
	}
}

func jsonTo(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
