package images

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/image/registrytest"
)

// BenchmarkImageCacheStart measures what an image cache buys: the start
// (create → Running) of a big image (1 GiB of incompressible layers by
// default; $SKIFF_BENCH_IMAGE_MB to change) pulled cold, versus started
// from a Ready image cache, versus a small image; and, as the peer, podman
// pulling the same big image from the same registry in the same run. It
// writes bench-image.json and bench-image.svg to $SKIFF_BENCH_OUT (default
// out/ at the repository root). Run it with scripts/bench-image.sh, or:
//
//	go test ./tests/images/ -run '^$' -bench ImageCacheStart -benchtime 1x -timeout 30m
func BenchmarkImageCacheStart(b *testing.B) {
	if skipReason != "" {
		b.Skip(skipReason)
	}
	for i := 0; i < b.N; i++ {
		benchImageCache(b)
	}
}

type benchResult struct {
	Time          time.Time `json:"time"`
	Machine       string    `json:"machine"`
	BigImageBytes int64     `json:"bigImageBytes"`
	BigLayers     int       `json:"bigLayers"`
	Runs          int       `json:"runs"`
	// Start times, create → Running as the server records them (CreatedAt
	// to RunningAt), milliseconds; Breakdown has what the client saw.
	SmallColdMs     float64   `json:"smallColdStartMs"`
	SmallWarmMs     []float64 `json:"smallWarmStartMs"`
	BigColdMs       float64   `json:"bigColdStartMs"`
	BigCacheHitMs   []float64 `json:"bigCacheHitStartMs"`
	CacheReadyMs    float64   `json:"cacheReadyMs"`
	SkiffPullMs     float64   `json:"skiffPullMs"`
	PodmanPullMs    float64   `json:"podmanPullMs,omitempty"`
	PodmanError     string    `json:"podmanError,omitempty"`
	RegistryReqsHit int       `json:"registryRequestsDuringCacheHits"`
	Ratios          struct {
		CacheHitVsSmallWarm float64 `json:"cacheHitVsSmallWarm"`
		CacheHitVsBigCold   float64 `json:"cacheHitVsBigCold"`
		SkiffVsPodmanPull   float64 `json:"skiffPullVsPodmanPull,omitempty"`
	} `json:"ratios"`
	Target string `json:"target"`
	// Breakdown: per start, server-side create → scheduled → Running.
	Breakdown []string `json:"breakdown"`
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func benchImageCache(b *testing.B) {
	b.StopTimer()
	mb := int64(1024)
	if v, err := strconv.ParseInt(os.Getenv("SKIFF_BENCH_IMAGE_MB"), 10, 64); err == nil && v > 0 {
		mb = v
	}
	const runs = 9
	res := benchResult{Time: time.Now().UTC(), Machine: fmt.Sprintf("%s/%s, %d CPUs", runtime.GOOS, runtime.GOARCH, runtime.NumCPU()), Runs: runs,
		Target: "a cache hit starts the big image in about the time of the small one: cacheHitVsSmallWarm <= 1.2"}
	ctx := context.Background()

	reg := registrytest.Start(b, registrytest.Options{})
	bb := registrytest.Busybox(b)
	reg.Push(b, "bench/small:1", bb)
	layerCount := int(max(1, mb/128))
	layers, err := registrytest.RandomFileLayers(b.TempDir(), layerCount, mb<<20/int64(layerCount))
	if err != nil {
		b.Fatal(err)
	}
	big, err := mutate.AppendLayers(bb, layers...)
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	reg.Push(b, "bench/big:1", big)
	for _, l := range layers {
		n, _ := l.Size()
		res.BigImageBytes += n
	}
	res.BigLayers = layerCount + 1
	b.Logf("pushed the big image (%d MiB in %d layers) in %s", res.BigImageBytes>>20, res.BigLayers, time.Since(t0).Round(time.Millisecond))

	cl := newCluster(b, "--insecure-registry", reg.Host)
	hosts, err := cl.c.Hosts(ctx)
	if err != nil {
		b.Fatal(err)
	}
	hostID := map[string]string{}
	for _, h := range hosts {
		hostID[h.Name] = h.ID
	}
	bigRef, smallRef := reg.Ref("bench/big:1"), reg.Ref("bench/small:1")

	// 1. skiff pull of the big image, cold, on host 0.
	t0 = time.Now()
	final, err := cl.c.PullImage(ctx, api.PullImageRequest{Image: bigRef, Hosts: []string{hostID["img-host-0"]}}, nil)
	if err != nil || len(final) != 1 || final[0].Status != "complete" {
		b.Fatalf("skiff pull: %v %+v", err, final)
	}
	res.SkiffPullMs = ms(time.Since(t0))

	// 2. The peer: podman pull of the same image from the same registry.
	res.PodmanPullMs, res.PodmanError = podmanPull(b, bigRef)

	// 3. Starts. start runs one group on a host and returns create → Running.
	no := false
	start := func(name, ref, host string, match bool) float64 {
		b.Helper()
		req := busyboxGroup(name, ref)
		req.Spec.NodeSelector = map[string]string{"host": host}
		if !match {
			req.Spec.AutoMatchImageCache = &no
		}
		t0 := time.Now()
		g, _, err := cl.c.CreateGroup(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		createMs := ms(time.Since(t0))
		rg, err := cl.c.Wait(ctx, g.ID, api.StatusRunning, 5*time.Minute)
		if err != nil {
			evs, _ := cl.c.Events(ctx, g.ID)
			b.Fatalf("%s: %v; events %+v", name, err, evs)
		}
		d := ms(time.Since(t0))
		if rg.ScheduledAt != nil && rg.RunningAt != nil {
			res.Breakdown = append(res.Breakdown, fmt.Sprintf("%s: scheduled +%s, running +%s, client saw %.1fms (create call %.1fms)", name,
				rg.ScheduledAt.Sub(rg.CreatedAt).Round(100*time.Microsecond), rg.RunningAt.Sub(*rg.ScheduledAt).Round(100*time.Microsecond), d, createMs))
			// The start time is the server's create → Running; the client's
			// wait adds its watch's latency, the same for every image.
			d = ms(rg.RunningAt.Sub(rg.CreatedAt))
		}
		if _, err := cl.c.DeleteGroup(ctx, g.ID, true); err != nil {
			b.Fatal(err)
		}
		cl.eventually(60*time.Second, name+" gone", func() bool {
			_, err := cl.c.GetGroup(ctx, g.ID)
			return err != nil
		})
		return d
	}
	res.BigColdMs = start("big-cold", bigRef, "img-host-1", false) // pulls inside create
	res.SmallColdMs = start("small-cold", smallRef, "img-host-1", false)
	for i := 0; i < runs; i++ {
		res.SmallWarmMs = append(res.SmallWarmMs, start(fmt.Sprintf("small-warm-%d", i), smallRef, "img-host-1", false))
	}

	// 4. An image cache of the big image on every host, then cache hits.
	t0 = time.Now()
	ic, err := cl.c.CreateImageCache(ctx, api.ImageCacheRequest{Name: "bench", Images: []string{bigRef}})
	if err != nil {
		b.Fatal(err)
	}
	cl.eventually(10*time.Minute, "cache Ready", func() bool {
		c, err := cl.c.GetImageCache(ctx, ic.ID)
		return err == nil && c.Status == api.ImageCacheReady
	})
	res.CacheReadyMs = ms(time.Since(t0))
	mark := reg.Mark()
	for i := 0; i < runs; i++ {
		host := fmt.Sprintf("img-host-%d", i%2)
		res.BigCacheHitMs = append(res.BigCacheHitMs, start(fmt.Sprintf("big-hit-%d", i), bigRef, host, true))
	}
	res.RegistryReqsHit = len(reg.Since(mark))

	res.Ratios.CacheHitVsSmallWarm = round2(median(res.BigCacheHitMs) / median(res.SmallWarmMs))
	res.Ratios.CacheHitVsBigCold = round2(median(res.BigCacheHitMs) / res.BigColdMs)
	if res.PodmanPullMs > 0 {
		res.Ratios.SkiffVsPodmanPull = round2(res.SkiffPullMs / res.PodmanPullMs)
	}
	b.ReportMetric(median(res.BigCacheHitMs), "cachehit-ms")
	b.ReportMetric(median(res.SmallWarmMs), "small-ms")
	b.ReportMetric(res.BigColdMs, "bigcold-ms")
	b.ReportMetric(res.Ratios.CacheHitVsSmallWarm, "hit/small")
	writeBench(b, &res)
	if _, err := cl.c.DeleteImageCache(ctx, ic.ID); err != nil {
		b.Error(err)
	}
}

func ms(d time.Duration) float64 { return round2(float64(d.Microseconds()) / 1000) }

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

// podmanPull times `podman pull` into a throwaway storage root.
func podmanPull(b *testing.B, ref string) (float64, string) {
	registrytest.EnsureInstalled("podman", "/usr/bin/podman")
	if _, err := exec.LookPath("podman"); err != nil {
		return 0, "podman is not installed (apt-get install podman)"
	}
	dir := b.TempDir()
	args := []string{"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"), "--storage-driver", "overlay"}
	t0 := time.Now()
	out, err := exec.Command("podman", append(args, "pull", "-q", "--tls-verify=false", ref)...).CombinedOutput()
	d := time.Since(t0)
	// Leave nothing behind: podman's storage may hold mounts.
	_ = exec.Command("podman", append(args, "rmi", "-a", "-f")...).Run()
	_ = exec.Command("podman", append(args, "system", "reset", "-f")...).Run()
	if err != nil {
		return 0, fmt.Sprintf("podman pull: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return ms(d), ""
}

// writeBench writes the JSON results and an SVG bar chart.
func writeBench(b *testing.B, res *benchResult) {
	dir := os.Getenv("SKIFF_BENCH_OUT")
	if dir == "" {
		dir = filepath.Join("..", "..", "out")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	js, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "bench-image.json"), append(js, '\n'), 0o644); err != nil {
		b.Fatal(err)
	}
	bars := []bar{
		{"small image, present (median)", median(res.SmallWarmMs), "#4c78a8"},
		{"1 GiB image, cache hit (median)", median(res.BigCacheHitMs), "#54a24b"},
		{"small image, cold pull", res.SmallColdMs, "#9ecae9"},
		{"1 GiB image, cold pull + start", res.BigColdMs, "#e45756"},
		{"skiff image pull, 1 GiB", res.SkiffPullMs, "#f58518"},
	}
	if res.PodmanPullMs > 0 {
		bars = append(bars, bar{"podman pull, 1 GiB (peer)", res.PodmanPullMs, "#b279a2"})
	}
	title := fmt.Sprintf("skiff image cache: start of a %d MiB image (cache hit / small = %.2f, target ≤ 1.2)", res.BigImageBytes>>20, res.Ratios.CacheHitVsSmallWarm)
	if err := os.WriteFile(filepath.Join(dir, "bench-image.svg"), barChartSVG(title, "milliseconds (log scale)", bars), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("results: %s", js)
	abs, _ := filepath.Abs(dir)
	b.Logf("wrote %s/bench-image.json and bench-image.svg", abs)
}
