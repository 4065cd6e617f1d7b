package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

// TestBenchScale measures `kubectl scale` of a Deployment on the virtual
// node to N replicas (SKIFF_KUBE_BENCH=N, e.g. 500) until all are Ready, and
// back to 0 until every group is gone. It is a benchmark, not a timed test:
// it reports, it asserts only that the pods got there. Run it through
// scripts/k8s-bench.sh. Results go to $SKIFF_KUBE_BENCH_OUT as JSON.
func TestBenchScale(t *testing.T) {
	requireEnv(t)
	n, err := strconv.Atoi(os.Getenv("SKIFF_KUBE_BENCH"))
	if err != nil || n <= 0 {
		t.Skip("SKIFF_KUBE_BENCH=N not set (see scripts/k8s-bench.sh)")
	}
	ns := namespace(t)
	apply(t, ns, fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: bench}
spec:
  replicas: 0
  selector: {matchLabels: {app: bench}}
  template:
    metadata: {labels: {app: bench}}
    spec:%s
      enableServiceLinks: false%s
      containers:
      - name: app
        image: busybox
        imagePullPolicy: IfNotPresent
        command: [sleep, "3600"]
`, podSpecYAML, noToken()))
	ctx := context.Background()
	deploy := e.kube.AppsV1().Deployments(ns)

	before := apiLatencies(ctx)
	start := time.Now()
	profileKubelet(t)
	kubectl(t, "-n", ns, "scale", "deployment/bench", fmt.Sprintf("--replicas=%d", n))
	var firstReady, allRunningGroups time.Duration
	var ready int32
	err = poll(10*time.Minute, func() (bool, error) {
		d, err := deploy.Get(ctx, "bench", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		ready = d.Status.ReadyReplicas
		if ready > 0 && firstReady == 0 {
			firstReady = time.Since(start)
		}
		return ready == int32(n), nil
	})
	up := time.Since(start)
	if err != nil {
		t.Fatalf("%d of %d Ready after %s", ready, n, up)
	}
	gs, _ := e.groupsOfNode(ctx)
	running := 0
	for _, g := range gs {
		if g.Labels["k8s.skiff.io/namespace"] == ns && g.Status == "Running" {
			running++
		}
	}
	allRunningGroups = up
	t.Logf("scale 0→%d: all Ready in %.2fs (first Ready %.2fs); %d groups Running", n, up.Seconds(), firstReady.Seconds(), running)
	for _, l := range diffLatencies(before, apiLatencies(ctx)) {
		t.Logf("  %s", l)
	}
	stages := stageTimes(ctx, ns, start, gs)
	for _, st := range stages {
		t.Logf("  %-16s p10 %6.2fs  p50 %6.2fs  p90 %6.2fs  last %6.2fs", st.name, st.p10, st.p50, st.p90, st.last)
	}

	start = time.Now()
	kubectl(t, "-n", ns, "scale", "deployment/bench", "--replicas=0")
	err = poll(10*time.Minute, func() (bool, error) {
		pods, err := e.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(pods.Items) == 0, nil
	})
	down := time.Since(start)
	if err != nil {
		t.Fatalf("pods still there %s after scaling to 0", down)
	}
	t.Logf("scale %d→0: all pods gone in %.2fs", n, down.Seconds())

	// The native peer, same run, same skiff: the same number of groups
	// through skiff's batch API straight away (skiff bench burst), so the
	// ratio is what the Kubernetes path costs on top.
	var native float64
	nativeBefore := apiLatencies(ctx)
	defer func() {
		for _, l := range diffLatencies(nativeBefore, apiLatencies(ctx)) {
			if strings.HasPrefix(l, "skiff ") || strings.HasPrefix(l, "etcd(skiff)") {
				t.Logf("  native peer: %s", l)
			}
		}
	}()
	burst := exec.Command(e.skiffBin, "bench", "burst", "--config", e.skiffCfg, "--count", strconv.Itoa(n), "-o", "json")
	if out, err := burst.Output(); err != nil {
		t.Logf("native peer (skiff bench burst): %v", err)
	} else {
		var r struct {
			AllRunningSeconds float64 `json:"allRunningSeconds"`
			PoolHits          int64   `json:"poolHits"`
			PoolMisses        int64   `json:"poolMisses"`
		}
		if json.Unmarshal(out, &r) == nil {
			native = r.AllRunningSeconds
			t.Logf("native peer: skiff bench burst --count %d: all Running in %.2fs (pool hits %d, misses %d); Kubernetes path %.1f× that",
				n, native, r.PoolHits, r.PoolMisses, up.Seconds()/native)
		}
	}
	stageMap := map[string]any{}
	for _, st := range stages {
		stageMap[st.name] = map[string]float64{"p10": st.p10, "p50": st.p50, "p90": st.p90, "last": st.last}
	}
	res := map[string]any{
		"stagesSeconds": stageMap, "nativeBurstAllRunningSeconds": native,
		"benchmark": "k8s-virtual-node-scale", "replicas": n, "cores": runtimeCores(),
		"scaleUpAllReadySeconds": up.Seconds(), "firstReadySeconds": firstReady.Seconds(),
		"scaleDownAllGoneSeconds": down.Seconds(), "targetSeconds": 10, "groupsRunning": running,
		"allRunningGroupsSeconds": allRunningGroups.Seconds(), "time": time.Now().UTC().Format(time.RFC3339),
	}
	out := os.Getenv("SKIFF_KUBE_BENCH_OUT")
	if out == "" {
		out = filepath.Join(repo, "bench-results", "k8s-scale.json")
	}
	_ = os.MkdirAll(filepath.Dir(out), 0o755)
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
		t.Error(err)
	}
	t.Logf("results: %s\n%s", out, b)
}

func runtimeCores() int { return runtime.NumCPU() }

// noToken, with SKIFF_KUBE_BENCH_NOTOKEN=1, leaves the service-account
// token volume out of the pods: a diagnostic, to see what the per-pod
// TokenRequest and config-file volume cost.
func noToken() string {
	if os.Getenv("SKIFF_KUBE_BENCH_NOTOKEN") == "" {
		return ""
	}
	return "\n      automountServiceAccountToken: false"
}

// profileKubelet, with SKIFF_KUBE_KUBELET_PPROF=ADDR (the kubelet's
// --pprof) and SKIFF_KUBE_PROFILE_DIR, takes a 10 s CPU profile of skiff
// kubelet from now and goroutine dumps at 3, 6 and 9 s, into that dir.
func profileKubelet(t *testing.T) {
	addr, dir := os.Getenv("SKIFF_KUBE_KUBELET_PPROF"), os.Getenv("SKIFF_KUBE_PROFILE_DIR")
	if addr == "" || dir == "" {
		return
	}
	get := func(path, file string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Logf("profile: %v", err)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		_ = os.WriteFile(filepath.Join(dir, file), b, 0o644)
	}
	go get("/debug/pprof/profile?seconds=10", "kubelet.cpu.pprof")
	for _, s := range []int{3, 6, 9} {
		time.AfterFunc(time.Duration(s)*time.Second, func() { get("/debug/pprof/goroutine?debug=1", fmt.Sprintf("goroutines-%ds.txt", s)) })
	}
}

type stage struct {
	name                string
	p10, p50, p90, last float64
}

// stageTimes says when, after start, the pods of ns passed each stage of
// the pipeline: created by the ReplicaSet controller, bound by the
// scheduler, their group created in skiff, the group Running, the pod
// Ready. Kubernetes' times are to the second; skiff's are exact.
func stageTimes(ctx context.Context, ns string, start time.Time, gs []api.Group) []stage {
	pods, err := e.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil
	}
	var created, scheduled, ready, gCreated, gRunning []float64
	since := func(t time.Time) float64 { return t.Sub(start).Seconds() }
	for _, p := range pods.Items {
		created = append(created, since(p.CreationTimestamp.Time))
		for _, c := range p.Status.Conditions {
			switch c.Type {
			case corev1.PodScheduled:
				scheduled = append(scheduled, since(c.LastTransitionTime.Time))
			case corev1.PodReady:
				if c.Status == corev1.ConditionTrue {
					ready = append(ready, since(c.LastTransitionTime.Time))
				}
			}
		}
	}
	for _, g := range gs {
		if g.Labels["k8s.skiff.io/namespace"] != ns {
			continue
		}
		gCreated = append(gCreated, since(g.CreatedAt))
		if g.RunningAt != nil {
			gRunning = append(gRunning, since(*g.RunningAt))
		}
	}
	mk := func(name string, v []float64) stage {
		if len(v) == 0 {
			return stage{name: name}
		}
		sort.Float64s(v)
		at := func(q float64) float64 { return v[min(len(v)-1, int(q*float64(len(v))))] }
		return stage{name, at(0.1), at(0.5), at(0.9), v[len(v)-1]}
	}
	return []stage{
		mk("pod created", created), mk("pod scheduled", scheduled), mk("group created", gCreated),
		mk("group running", gRunning), mk("pod ready", ready),
	}
}

// apiLatencies reads the request latency sums and counts, per route, of
// skiff's API and of kube-apiserver's (verb + resource).
func apiLatencies(ctx context.Context) map[string][2]float64 {
	out := map[string][2]float64{}
	add := func(key, kind string, v float64) {
		cur := out[key]
		if kind == "sum" {
			cur[0] += v
		} else {
			cur[1] += v
		}
		out[key] = cur
	}
	re := regexp.MustCompile(`^(skiff_api_request_seconds|apiserver_request_duration_seconds|etcd_disk_wal_fsync_duration_seconds|etcd_disk_backend_commit_duration_seconds)_(sum|count)(?:\{([^}]*)\})? (\S+)$`)
	label := func(labels, name string) string {
		m := regexp.MustCompile(name + `="([^"]*)"`).FindStringSubmatch(labels)
		if m == nil {
			return ""
		}
		return m[1]
	}
	scan := func(b []byte, prefix string) {
		for _, line := range strings.Split(string(b), "\n") {
			m := re.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			v, err := strconv.ParseFloat(m[4], 64)
			if err != nil {
				continue
			}
			key := prefix + label(m[3], "route")
			switch m[1] {
			case "apiserver_request_duration_seconds":
				key = prefix + label(m[3], "verb") + " " + label(m[3], "resource") + "/" + label(m[3], "subresource")
			case "etcd_disk_wal_fsync_duration_seconds":
				key = prefix + "wal fsync"
			case "etcd_disk_backend_commit_duration_seconds":
				key = prefix + "backend commit"
			}
			add(key, m[2], v)
		}
	}
	if cfg, err := client.LoadConfig(e.skiffCfg); err == nil {
		if resp, err := http.Get(strings.TrimSuffix(cfg.Endpoint, "/") + "/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			scan(b, "skiff ")
		}
	}
	if b, err := e.kube.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx); err == nil {
		scan(b, "kube ")
	}
	for name, u := range e.etcdURLs {
		if resp, err := http.Get(u + "/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			scan(b, "etcd("+name+") ")
		}
	}
	return out
}

// diffLatencies lists the routes called between two readings, busiest
// first, with their count and mean latency.
func diffLatencies(a, b map[string][2]float64) []string {
	type row struct {
		key        string
		n, meanSec float64
	}
	var rows []row
	for k, v := range b {
		n := v[1] - a[k][1]
		if n < 5 {
			continue
		}
		rows = append(rows, row{k, n, (v[0] - a[k][0]) / n})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].n > rows[j].n })
	var out []string
	for _, r := range rows {
		out = append(out, fmt.Sprintf("%-55s %6.0f calls, mean %7.1f ms", r.key, r.n, r.meanSec*1000))
	}
	return out
}
