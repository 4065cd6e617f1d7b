// Package kube runs skiff's virtual node against a real Kubernetes control
// plane: kube-apiserver on skiff's embedded etcd package, the real
// kube-controller-manager and kube-scheduler (so Deployments and Jobs
// reconcile), the real kubectl, an all-in-one `skiff up` with real
// sandboxes, and `skiff kubelet` as a subprocess.
//
// The Kubernetes binaries come from scripts/k8s-tools.sh (tools/k8s, cached
// under /var/cache/skiff-k8s). When they are not built, TestMain builds
// them within $SKIFF_K8S_BUILD_TIMEOUT (default 20m) and skips every test,
// saying why, if that fails. The tests are privileged: they skip unless
// run as root.
//
//	scripts/k8s-tools.sh && go test ./tests/kube/ -count=1 -v
//
// SKIFF_BIN names a prebuilt skiff; SKIFF_KUBE_KEEP=1 keeps the data dir
// and logs.
package kube

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

var (
	repo       string
	skipReason string
	e          *env
)

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	switch {
	case runtime.GOOS != "linux":
		skipReason = "the kube tests need Linux"
	case os.Geteuid() != 0:
		skipReason = "the kube tests run real sandboxes: run them as root"
	}
	if skipReason != "" {
		fmt.Fprintln(os.Stderr, "kube: SKIP:", skipReason)
		return m.Run()
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube: go env GOMOD:", err)
		return 1
	}
	repo = filepath.Dir(strings.TrimSpace(string(out)))

	tools, err := k8sTools()
	if err != nil {
		skipReason = "Kubernetes tools not available (run scripts/k8s-tools.sh): " + err.Error()
		fmt.Fprintln(os.Stderr, "kube: SKIP:", skipReason)
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "skiff-kube-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube:", err)
		return 1
	}
	_ = os.Chmod(dir, 0o755)
	bin := os.Getenv("SKIFF_BIN")
	if bin == "" {
		bin = filepath.Join(dir, "skiff")
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/skiff")
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "kube: go build ./cmd/skiff: %v\n%s", err, out)
			return 1
		}
	} else if bin, err = filepath.Abs(bin); err != nil {
		fmt.Fprintln(os.Stderr, "kube:", err)
		return 1
	}
	e = &env{dir: dir, tools: tools, skiffBin: bin}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	err = e.start(ctx)
	cancel()
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube: start the test cluster:", err)
		e.dumpLogs()
	} else {
		code = m.Run()
		if code != 0 {
			e.dumpLogs()
		}
	}
	e.stop()
	if os.Getenv("SKIFF_KUBE_KEEP") == "" {
		_ = os.RemoveAll(dir)
	} else {
		fmt.Fprintln(os.Stderr, "kube: kept", dir)
	}
	return code
}

// k8sTools returns the directory of the built Kubernetes binaries,
// building them when missing (bounded by $SKIFF_K8S_BUILD_TIMEOUT).
func k8sTools() (string, error) {
	script := filepath.Join(repo, "scripts", "k8s-tools.sh")
	if out, err := exec.Command(script, "--print").Output(); err == nil {
		return strings.TrimSpace(lastLine(string(out))), nil
	}
	budget := 20 * time.Minute
	if v := os.Getenv("SKIFF_K8S_BUILD_TIMEOUT"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			budget = d
		}
	}
	fmt.Fprintf(os.Stderr, "kube: building the Kubernetes tools (at most %s)…\n", budget)
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	cmd := exec.CommandContext(ctx, script)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("scripts/k8s-tools.sh did not finish within %s", budget)
		}
		return "", fmt.Errorf("scripts/k8s-tools.sh: %w", err)
	}
	return strings.TrimSpace(lastLine(string(out))), nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func (e *env) dumpLogs() {
	for _, p := range []*proc{e.apiserver, e.kcm, e.scheduler, e.skiff, e.kubelet} {
		if p != nil {
			fmt.Fprintf(os.Stderr, "---- %s (%s) ----\n%s\n", p.name, p.log, p.tail(60))
		}
	}
}

func requireEnv(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}
