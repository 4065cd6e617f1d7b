package kube

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestConfigMapUpdateNoShell: a ConfigMap change reaches a pod whose image
// has no shell at all (just one static binary), running as a non-root
// user with the volume mounted read-only, as Kubernetes mounts it. No
// exec could have written it: skiff's volume API swapped the files in.
func TestConfigMapUpdateNoShell(t *testing.T) {
	ns := namespace(t)
	apply(t, ns, `apiVersion: v1
kind: ConfigMap
metadata: {name: live}
data: {greeting: hello}
`)
	apply(t, ns, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: noshell, labels: {pod: noshell}}
spec:%s
  securityContext: {runAsUser: 1000, runAsGroup: 1000}
  containers:
  - name: c
    image: incluster
    imagePullPolicy: IfNotPresent
    command: [/incluster, watch, /etc/live/greeting]
    volumeMounts: [{name: live, mountPath: /etc/live}]
  volumes:
  - {name: live, configMap: {name: live}}
`, strings.ReplaceAll(podSpecYAML, "\n    ", "\n")))
	waitReady(t, ns, "pod=noshell", 1, 90*time.Second)
	logsHave := func(want string) error {
		var out string
		return poll(30*time.Second, func() (bool, error) {
			out, _ = e.kubectl(context.Background(), "", "-n", ns, "logs", "noshell")
			return strings.Contains(out, want), nil
		})
	}
	if err := logsHave("content: hello"); err != nil {
		t.Fatalf("the pod never read the first content")
	}
	kubectl(t, "-n", ns, "patch", "configmap", "live", "-p", `{"data":{"greeting":"bonjour"}}`)
	if err := logsHave("content: bonjour"); err != nil {
		out, _ := e.kubectl(context.Background(), "", "-n", ns, "logs", "noshell")
		t.Fatalf("configMap update did not reach the shell-less pod in 30s: %q", out)
	}
	out, _ := e.kubectl(context.Background(), "", "-n", ns, "logs", "noshell")
	if strings.Contains(out, "error:") {
		t.Errorf("the reader saw the file missing during the swap: %q", out)
	}
}

// TestDeleteGracePeriod: kubectl delete --grace-period=N gives the
// container exactly N seconds, not the pod's terminationGracePeriodSeconds.
func TestDeleteGracePeriod(t *testing.T) {
	ns := namespace(t)
	// The container ignores SIGTERM: only the SIGKILL at the end of the
	// grace period ends it.
	apply(t, ns, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: stubborn, labels: {pod: stubborn}}
spec:%s
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "trap '' TERM; while true; do sleep 1; done"]
`, strings.ReplaceAll(strings.ReplaceAll(podSpecYAML, "\n    ", "\n"), "terminationGracePeriodSeconds: 1", "terminationGracePeriodSeconds: 120")))
	waitReady(t, ns, "pod=stubborn", 1, 90*time.Second)
	start := time.Now()
	kubectl(t, "-n", ns, "delete", "pod", "stubborn", "--grace-period=3", "--wait=true", "--timeout=90s")
	took := time.Since(start)
	// At least the 3 s (SIGTERM is ignored), far less than the pod's own
	// 120 s.
	if took < 2500*time.Millisecond || took > 40*time.Second {
		t.Errorf("delete --grace-period=3 took %s", took)
	}
	t.Logf("delete --grace-period=3 of a container that ignores SIGTERM took %s", took.Round(100*time.Millisecond))
}
