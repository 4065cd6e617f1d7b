package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
      enableServiceLinks: false
      containers:
      - name: app
        image: busybox
        imagePullPolicy: IfNotPresent
        command: [sleep, "3600"]
`, podSpecYAML))
	ctx := context.Background()
	deploy := e.kube.AppsV1().Deployments(ns)

	start := time.Now()
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

	res := map[string]any{
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
