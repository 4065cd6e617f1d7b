package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

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
		Short: "Measure skiff: a burst of creates, or a replayed daily trace",
		Args:  noArgs(""),
	}
	cmd.AddCommand(newBenchBurstCmd(a), newBenchReplayCmd(a))
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
the teardown time. With --vs runc (or podman) it then starts the same
number of containers of the same rootfs with 'runc run -d' ('podman run
-d') in a loop and prints the ratio. Every group, sandbox and peer
container it makes is removed unless
--keep.

--pool on waits until the hosts' warm pool holds prepared sandboxes of the
burst's shape class (start the agent or skiff up with --pool-size
CLASS=N; 'skiff hosts' shows the pool), --pool off requires the hosts to
hold none, so every start is cold. Either way the result counts the pool
hits and misses of the burst (poolHits, poolMisses).`,
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
			case "off", "", "on":
			default:
				return usagef(cmd, "--pool %q: want on or off", pool)
			}
			cfg.Pool = pool
			cfg.Command = strings.Fields(cmdS)
			if vs != "" {
				if vs != "runc" && vs != "podman" {
					return usagef(cmd, "--vs %q: want runc or podman", vs)
				}
				if peerImage == "" {
					return usagef(cmd, "--vs %s needs --peer-image, the OCI layout tarball the image was imported from (scripts/build-test-image.sh)", vs)
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
	fl.StringVar(&pool, "pool", "", "warm pool: on (wait for the hosts' pool of the burst's class to fill), off (require an empty pool), or unset (whatever the hosts hold)")
	fl.DurationVar(&cfg.PoolWait, "pool-wait", 5*time.Minute, "with --pool: how long to wait for the pool to fill or drain")
	fl.BoolVar(&cfg.Keep, "keep", false, "leave the groups running (no teardown)")
	fl.StringVar(&vs, "vs", "", "also run the peer: runc or podman")
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
	if r.PoolReported {
		fmt.Fprintf(w, "%-22s %d hits, %d misses (%.0f%% hit rate; %d prepared before)\n", "warm pool "+r.PoolClass, r.PoolHits, r.PoolMisses, 100*r.PoolHitRate, r.PoolSize)
	} else {
		fmt.Fprintf(w, "warm pool              none reported by the hosts\n")
	}
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

func newBenchReplayCmd(a *cli) *cobra.Command {
	var (
		cfg                      bench.ReplayConfig
		l                        bench.UpLauncher
		cpu, mem, modes, spikes  string
		cidr                     string
		output, outFile, svgFile string
	)
	cfg.Trace = bench.DefaultTrace()
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Replay a synthetic daily trace against fresh skiffs: no pool vs a fixed pool vs forecast-driven pools",
		Long: `replay generates a deterministic daily create trace (seeded): a base rate
with a diurnal shape (0.2× at midnight, 1.8× at noon) plus spikes at the
same time every day, time-compressed so a day lasts --day. For each mode
it starts a fresh 'skiff up' (its own temp dir, ports and pod range, as
root), imports --image-tar, plays the trace's creates at their times
(each group lives a few seconds of the trace, then is deleted), and
records create→Running (the API's status times) and the hosts' pool hits
and misses, then deletes everything, drains the pool, stops skiff with
SIGINT and checks that it left nothing behind.

  none      --pool-max-per-host 0: no pool, every start is cold
  fixed     --pool-size CLASS=N, N = ceil(mean create rate × --fixed-window)
  forecast  --forecast-bucket B --forecast-season DAY/B: the planner
            sizes the pools from the first days' history

The forecast mode plays every day (the first ones are its history); the
others play the last day only. All modes are measured on the last day.
Needs the skiff binary running it to be the one under test.`,
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
			if cfg.Memory, err = api.ParseQuantity(mem); err != nil {
				return usagef(cmd, "--memory: %v", err)
			}
			cfg.Modes = nil
			for _, m := range strings.Split(modes, ",") {
				if m = strings.TrimSpace(m); m != "" {
					cfg.Modes = append(cfg.Modes, m)
				}
			}
			if cfg.Trace.Spikes, err = parseSpikes(spikes); err != nil {
				return usagef(cmd, "--spikes: %v", err)
			}
			if err := cfg.Trace.Validate(); err != nil {
				return usagef(cmd, "%v", err)
			}
			if l.ImageTar == "" {
				return usagef(cmd, "--image-tar is required: the OCI layout tarball every fresh skiff imports (scripts/build-test-image.sh makes one)")
			}
			if l.CIDR, err = netip.ParsePrefix(cidr); err != nil {
				return usagef(cmd, "--cidr: %v", err)
			}
			if os.Geteuid() != 0 {
				return errors.New("bench replay starts skiff up, which runs real sandboxes: run it as root")
			}
			if l.Binary, err = os.Executable(); err != nil {
				return err
			}
			l.Log, cfg.Log = a.err, a.err
			res, err := bench.RunReplay(cmd.Context(), &l, cfg)
			if res == nil {
				return err
			}
			if outFile != "" {
				if werr := writeFileWith(outFile, func(w io.Writer) error { return jsonTo(w, res) }); werr != nil {
					return werr
				}
			}
			if svgFile != "" {
				if werr := writeFileWith(svgFile, func(w io.Writer) error { return bench.WriteReplaySVG(w, res) }); werr != nil {
					return werr
				}
			}
			if output == outputJSON {
				if perr := a.printJSON(res); perr != nil {
					return perr
				}
			} else {
				bench.PrintReplay(a.out, res)
			}
			if err != nil {
				return err
			}
			for _, m := range res.Modes {
				if m.Error != "" || len(m.Leaks) > 0 {
					return fmt.Errorf("mode %s did not run cleanly (see above)", m.Mode)
				}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.Int64Var(&cfg.Trace.Seed, "seed", cfg.Trace.Seed, "trace seed: the same seed, the same trace")
	fl.IntVar(&cfg.Trace.Days, "days", cfg.Trace.Days, "days in the trace; the last one is measured, the ones before train the forecast")
	fl.DurationVar(&cfg.Trace.Day, "day", cfg.Trace.Day, "length of one compressed day")
	fl.Float64Var(&cfg.Trace.Scale, "scale", cfg.Trace.Scale, "multiply the base rate and the spikes")
	fl.Float64Var(&cfg.Trace.BaseRate, "base-rate", cfg.Trace.BaseRate, "mean creates per second of the diurnal base (before --scale)")
	fl.StringVar(&spikes, "spikes", "0.375:40:3s,0.75:25:2s", "daily spikes PHASE:SIZE:WIDTH,… (phase of the day 0–1, creates, spread)")
	fl.DurationVar(&cfg.Trace.LifeMin, "life-min", cfg.Trace.LifeMin, "shortest group lifetime (compressed time)")
	fl.DurationVar(&cfg.Trace.LifeMax, "life-max", cfg.Trace.LifeMax, "longest group lifetime")
	fl.StringVar(&modes, "modes", "none,fixed,forecast", "modes to run, in order")
	fl.StringVar(&cfg.Image, "image", "busybox", "image of every group (the name --image-tar imports as)")
	fl.StringVar(&l.ImageTar, "image-tar", "", "image tarball every fresh skiff imports (required)")
	fl.StringVar(&cpu, "cpu", "0.01", "vCPU per group")
	fl.StringVar(&mem, "memory", "8Mi", "memory per group")
	fl.IntVar(&cfg.FixedSize, "fixed-size", 0, "the fixed mode's pool (default: ceil(mean rate × --fixed-window))")
	fl.DurationVar(&cfg.FixedWindow, "fixed-window", 5*time.Second, "the fixed pool covers the mean create rate over this long")
	fl.DurationVar(&cfg.Bucket, "forecast-bucket", time.Second, "the forecast's bucket width; the season is --day in buckets")
	fl.IntVar(&l.ForecastLead, "forecast-lead", 0, "buckets the planner provisions ahead (default: skiff's)")
	fl.StringVar(&cidr, "cidr", "10.214.0.0/16", "pod range of the fresh skiffs; must be free on this machine")
	fl.StringVar(&l.WorkRoot, "work-dir", "", "where the fresh skiffs' directories go (default $TMPDIR)")
	fl.StringArrayVar(&l.ExtraArgs, "up-arg", nil, "extra argument for every 'skiff up' (repeatable)")
	fl.StringVar(&outFile, "out", "", "also write the full JSON result (with the per-bucket series) to FILE")
	fl.StringVar(&svgFile, "svg", "", "write a plot of the measured day per mode (SVG) to FILE")
	addOutputFlag(cmd, &output)
	return cmd
}

// parseSpikes reads PHASE:SIZE:WIDTH,….
func parseSpikes(s string) ([]bench.Spike, error) {
	var out []bench.Spike
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		f := strings.Split(part, ":")
		if len(f) != 3 {
			return nil, fmt.Errorf("%q: want PHASE:SIZE:WIDTH", part)
		}
		at, err1 := strconv.ParseFloat(f[0], 64)
		size, err2 := strconv.Atoi(f[1])
		width, err3 := time.ParseDuration(f[2])
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("%q: %v", part, err)
		}
		out = append(out, bench.Spike{At: at, Size: size, Width: width})
	}
	return out, nil
}

func writeFileWith(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	werr := write(f)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	return werr
}
