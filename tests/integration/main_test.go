// Package integration runs the real skiff binaries — a server with embedded
// etcd and three agents acting as three hosts on this one machine — and
// drives them through the typed client and raw HTTP. The tests are
// privileged (namespaces, cgroups, veths): they skip unless run as root.
//
//	go test ./tests/integration/ -count=1 -v
//
// $SKIFF_BIN names a prebuilt binary (the Makefile sets it); otherwise
// TestMain builds bin/skiff once. SKIFF_IT_KEEP=1 keeps the data dirs and
// process logs of every cluster for a look afterwards. After all tests a leak check fails the run
// if any mount, veth, cgroup or process made by the tests is left behind.
package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

var (
	// skiffBin is the binary under test.
	skiffBin string
	// imageTar is the busybox OCI layout built by scripts/build-test-image.sh.
	imageTar string
	// testRoot holds every data dir of the run; nothing outside it is ours.
	testRoot string
	// skipReason, when set, makes every test skip.
	skipReason string
	// baseline is what was on the machine before the tests (so a concurrent
	// skiff on the same machine is not taken for ours).
	baseline machineState
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		skipReason = "integration tests run real sandboxes (namespaces, cgroups, veths): run them as root"
		fmt.Fprintln(os.Stderr, "integration: SKIP:", skipReason)
		return m.Run()
	}
	if runtime.GOOS != "linux" {
		skipReason = "integration tests need Linux"
		return m.Run()
	}
	repo, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	testRoot, err = os.MkdirTemp("", "skiff-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	// Sandboxes must be able to traverse the data dirs.
	_ = os.Chmod(testRoot, 0o755)
	setupOK := false
	defer func() {
		if !setupOK {
			_ = os.RemoveAll(testRoot)
		}
	}()

	if skiffBin = os.Getenv("SKIFF_BIN"); skiffBin == "" {
		skiffBin = filepath.Join(testRoot, "skiff")
		cmd := exec.Command("go", "build", "-o", skiffBin, "./cmd/skiff")
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "integration: go build ./cmd/skiff: %v\n%s", err, out)
			return 1
		}
	} else if skiffBin, err = filepath.Abs(skiffBin); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	imageTar = filepath.Join(testRoot, "busybox-oci.tar")
	cmd := exec.Command(filepath.Join(repo, "scripts", "build-test-image.sh"), imageTar)
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: build-test-image.sh: %v\n%s", err, out)
		return 1
	}
	if err := checkPodRangeFree(); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	baseline = snapshotMachine()
	setupOK = true

	code := m.Run()

	// Every cluster has cleaned up after itself by now (t.Cleanup); this is
	// the last word on what is left on the machine.
	if leaks := findLeaks(baseline); len(leaks) > 0 {
		fmt.Fprintln(os.Stderr, "integration: LEAK CHECK FAILED; left on the machine:")
		for _, l := range leaks {
			fmt.Fprintln(os.Stderr, "  -", l)
		}
		forceCleanup(baseline, func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "integration: cleanup: "+format+"\n", args...)
		})
		code = 1
	} else {
		fmt.Fprintln(os.Stderr, "integration: leak check: clean")
		// Agents keep their (empty) cgroup parent across restarts on
		// purpose; the test hosts are gone for good, so remove theirs.
		for _, c := range globalScope().cgroupDirs(true) {
			_ = os.Remove(c)
		}
	}
	if os.Getenv("SKIFF_IT_KEEP") == "" {
		_ = os.RemoveAll(testRoot)
	} else {
		fmt.Fprintln(os.Stderr, "integration: kept", testRoot)
	}
	return code
}

// requireRoot skips t when the suite cannot run here.
func requireRoot(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the skiff module")
	}
	return filepath.Dir(mod), nil
}
