package linux_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skiffhq/skiff/internal/sandbox"
	"github.com/skiffhq/skiff/internal/sandbox/linux"
	"github.com/skiffhq/skiff/internal/sandbox/sandboxtest"
)

func TestMain(m *testing.M) {
	linux.Init() // the container init stage re-executes this test binary
	os.Exit(m.Run())
}

// Privileged tests: they need root (namespaces, mounts, cgroups).
func privileged(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("privileged: needs root")
	}
}

// newRuntime makes a Runtime with its own cgroup parent, and checks after
// the test that nothing is left: no mounts under the state dir, no cgroups,
// no processes.
func newRuntime(t *testing.T, stateDir string) sandbox.Runtime {
	t.Helper()
	rt, err := linux.New(linux.Config{StateDir: stateDir, CgroupParent: cgroupParent(t)})
	if err != nil {
		t.Fatalf("linux.New: %v", err)
	}
	return rt
}

// cgroupParent is one per top-level test, removed (and checked empty) at its end.
func cgroupParent(t *testing.T) string {
	name := "skiff-test-" + strings.NewReplacer("/", "-").Replace(strings.SplitN(t.Name(), "/", 2)[0])
	return fmt.Sprintf("%s-%d", name, os.Getpid())
}

func cgroupDirs(parent string) []string {
	var dirs []string
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return []string{filepath.Join("/sys/fs/cgroup", parent)}
	}
	for _, c := range []string{"cpu", "cpuacct", "memory", "pids"} {
		dirs = append(dirs, filepath.Join("/sys/fs/cgroup", c, parent))
	}
	return dirs
}

func leakCheck(parent string) func(t *testing.T, stateDir string) {
	return func(t *testing.T, stateDir string) {
		t.Helper()
		f, err := os.Open("/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		s := bufio.NewScanner(f)
		for s.Scan() {
			if fs := strings.Fields(s.Text()); len(fs) > 4 && strings.HasPrefix(fs[4], stateDir) {
				t.Errorf("leak: mount %s", fs[4])
			}
		}
		f.Close()
		ents, _ := os.ReadDir(filepath.Join(stateDir, "sandboxes"))
		for _, e := range ents {
			t.Errorf("leak: sandbox dir %s", e.Name())
		}
		for _, d := range cgroupDirs(parent) {
			ents, _ := os.ReadDir(d)
			for _, e := range ents {
				if e.IsDir() {
					t.Errorf("leak: cgroup %s/%s", d, e.Name())
				}
			}
			if b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs")); len(bytes.TrimSpace(b)) > 0 {
				t.Errorf("leak: processes in %s: %s", d, b)
			}
		}
		// Our children: only zombies would remain, and none should.
		if kids := children(); len(kids) > 0 {
			t.Errorf("leak: child processes %v", kids)
		}
	}
}

// children lists the processes whose parent is this one.
func children() []string {
	self := fmt.Sprint(os.Getpid())
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == self {
			out = append(out, e.Name()+"("+f[0]+")")
		}
	}
	return out
}

func removeCgroupParent(t *testing.T) {
	for _, d := range cgroupDirs(cgroupParent(t)) {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("remove cgroup parent: %v", err)
		}
	}
}

func TestConformance(t *testing.T) {
	privileged(t)
	t.Cleanup(func() { removeCgroupParent(t) })
	sandboxtest.RunConformance(t, newRuntime, sandboxtest.BusyboxRootfs(t),
		sandboxtest.AfterEach(leakCheck(cgroupParent(t))))
}

// env is a runtime, one sandbox in it, and cleanup with leak checks.
type env struct {
	t     *testing.T
	rt    *linux.Runtime
	sb    string
	fs    []string
	state string
}

func (e *env) dir() string { return e.state }

func newEnv(t *testing.T, cfg sandbox.SandboxConfig) *env {
	privileged(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	dir := t.TempDir()
	parent := cgroupParent(t)
	t.Cleanup(func() { removeCgroupParent(t) })
	t.Cleanup(func() { leakCheck(parent)(t, dir) })
	rt, err := linux.New(linux.Config{StateDir: dir, CgroupParent: parent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := rt.RemoveSandbox(context.Background(), cfg.ID); err != nil {
			t.Errorf("RemoveSandbox: %v", err)
		}
		rt.Close()
	})
	if _, err := rt.CreateSandbox(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, rt: rt, sb: cfg.ID, fs: rootfs, state: dir}
}

// run starts a container and returns its exit and output.
func (e *env) run(cfg sandbox.ContainerConfig) (sandbox.ExitEvent, string) {
	e.t.Helper()
	cfg.RootfsLayers = e.fs
	if _, err := e.rt.StartContainer(e.t.Context(), e.sb, cfg); err != nil {
		e.t.Fatalf("StartContainer: %v", err)
	}
	var ev sandbox.ExitEvent
	select {
	case ev = <-e.rt.Exits():
	case <-time.After(30 * time.Second):
		e.t.Fatal("no exit")
	}
	rc, err := e.rt.Logs(e.t.Context(), e.sb, cfg.Name, sandbox.LogOptions{Tail: -1})
	if err != nil {
		e.t.Fatal(err)
	}
	defer rc.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(rc)
	return ev, b.String()
}

func TestIsolation(t *testing.T) {
	e := newEnv(t, sandbox.SandboxConfig{ID: "iso", Hostname: "iso-host"})
	_, out := e.run(sandbox.ContainerConfig{Name: "ps", Args: []string{"sh", "-c",
		"hostname; ps -o pid,comm | tail -n +2 | wc -l; ip -o link | cut -d: -f2 | tr -d ' \\n'; echo; cat /proc/self/cgroup | grep -c ':/$'; ls /dev | tr '\\n' ' '; echo; mount | grep -c ' / '"}})
	lines := strings.Split(out, "\n")
	if len(lines) < 6 {
		t.Fatalf("output %q", out)
	}
	if lines[0] != "iso-host" {
		t.Errorf("hostname %q", lines[0])
	}
	// sh, ps, tail, wc: the container's own processes only.
	if n := strings.TrimSpace(lines[1]); n != "4" && n != "3" {
		t.Errorf("processes visible: %s\n%s", n, out)
	}
	if lines[2] != "lo" {
		t.Errorf("links %q, want only lo", lines[2])
	}
	if lines[3] == "0" {
		t.Errorf("cgroup namespace: no root entry in /proc/self/cgroup")
	}
	for _, d := range []string{"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "ptmx"} {
		if !strings.Contains(" "+lines[4]+" ", " "+d+" ") {
			t.Errorf("/dev lacks %s: %q", d, lines[4])
		}
	}
	if strings.Contains(lines[4], "sda") || strings.Contains(lines[4], "vda") {
		t.Errorf("host devices visible: %q", lines[4])
	}
}

func TestSharedNamespaces(t *testing.T) {
	e := newEnv(t, sandbox.SandboxConfig{ID: "shared", Hostname: "h"})
	// Containers of one sandbox share net and IPC: a listener in one is
	// reachable from the other over loopback.
	if _, err := e.rt.StartContainer(t.Context(), e.sb, sandbox.ContainerConfig{Name: "srv", RootfsLayers: e.fs,
		Args: []string{"sh", "-c", "echo hello | nc -l -p 8080"}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	_, out := e.run(sandbox.ContainerConfig{Name: "cli", Args: []string{"sh", "-c", "nc 127.0.0.1 8080 </dev/null"}})
	if strings.TrimSpace(out) != "hello" {
		t.Errorf("client got %q", out)
	}
}

func TestReadOnlyRoot(t *testing.T) {
	e := newEnv(t, sandbox.SandboxConfig{ID: "ro"})
	ev, out := e.run(sandbox.ContainerConfig{Name: "a", ReadOnlyRoot: true, Args: []string{"sh", "-c", "touch /x 2>/dev/null && echo rw || echo ro; touch /dev/shm/x && echo shm"}})
	if ev.ExitCode != 0 || out != "ro\nshm\n" {
		t.Errorf("exit %d, output %q", ev.ExitCode, out)
	}
}

func TestOOMKilled(t *testing.T) {
	e := newEnv(t, sandbox.SandboxConfig{ID: "oom"})
	// A sibling in the same group, and another group: both unaffected.
	if _, err := e.rt.StartContainer(t.Context(), e.sb, sandbox.ContainerConfig{Name: "sib", RootfsLayers: e.fs, Args: []string{"sleep", "1000"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.CreateSandbox(t.Context(), sandbox.SandboxConfig{ID: "oom-other"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.rt.RemoveSandbox(context.Background(), "oom-other") })
	if _, err := e.rt.StartContainer(t.Context(), "oom-other", sandbox.ContainerConfig{Name: "o", RootfsLayers: e.fs, Args: []string{"sleep", "1000"}}); err != nil {
		t.Fatal(err)
	}
	// 32 MiB limit; the shell builds a string far bigger than that.
	ev, _ := e.run(sandbox.ContainerConfig{Name: "hog", Memory: 32 << 20,
		Args: []string{"sh", "-c", `x=0123456789abcdef; while :; do x="$x$x"; done`}})
	if ev.Name != "hog" || !ev.OOMKilled || ev.ExitCode != 137 {
		t.Errorf("exit %+v, want hog OOMKilled with 137", ev)
	}
	for _, c := range [][2]string{{e.sb, "sib"}, {"oom-other", "o"}} {
		if code, err := e.rt.Exec(t.Context(), c[0], c[1], sandbox.ExecConfig{Args: []string{"true"}}); err != nil || code != 0 {
			t.Errorf("%s/%s after the OOM kill: %d, %v", c[0], c[1], code, err)
		}
	}
}

func TestCgroupLimits(t *testing.T) {
	e := newEnv(t, sandbox.SandboxConfig{ID: "limits", MilliCPU: 500, Memory: 256 << 20, Pids: 100})
	ev, out := e.run(sandbox.ContainerConfig{Name: "a", MilliCPU: 250, Memory: 64 << 20, Pids: 10, Args: []string{"sh", "-c", "true"}})
	if ev.ExitCode != 0 {
		t.Fatalf("exit %+v %q", ev, out)
	}
	parent := cgroupParent(t)
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		t.Skip("checked values are v1 files")
	}
	for f, want := range map[string]string{
		"cpu/" + parent + "/limits/cpu.cfs_quota_us":           "50000",
		"cpu/" + parent + "/limits/a/cpu.cfs_quota_us":         "25000",
		"memory/" + parent + "/limits/memory.limit_in_bytes":   fmt.Sprint(256 << 20),
		"memory/" + parent + "/limits/a/memory.limit_in_bytes": fmt.Sprint(64 << 20),
		"pids/" + parent + "/limits/pids.max":                  "100",
		"pids/" + parent + "/limits/a/pids.max":                "10",
	} {
		b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", f))
		if err != nil || strings.TrimSpace(string(b)) != want {
			t.Errorf("%s = %q, %v; want %s", f, b, err, want)
		}
	}
}

func TestRecoverAfterHalfCreate(t *testing.T) {
	privileged(t)
	dir := t.TempDir()
	parent := cgroupParent(t)
	t.Cleanup(func() { removeCgroupParent(t) })
	t.Cleanup(func() { leakCheck(parent)(t, dir) })
	// A sandbox directory without a completed state, as a crash in the
	// middle of CreateSandbox leaves it.
	if err := os.MkdirAll(filepath.Join(dir, "sandboxes", "half", "ns"), 0o700); err != nil {
		t.Fatal(err)
	}
	rt, err := linux.New(linux.Config{StateDir: dir, CgroupParent: parent})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	states, _ := rt.Recover(t.Context())
	if len(states) != 0 {
		t.Errorf("half-created sandbox recovered: %+v", states)
	}
}

func TestLogCap(t *testing.T) {
	privileged(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	dir := t.TempDir()
	parent := cgroupParent(t)
	t.Cleanup(func() { removeCgroupParent(t) })
	t.Cleanup(func() { leakCheck(parent)(t, dir) })
	rt, err := linux.New(linux.Config{StateDir: dir, CgroupParent: parent, LogMaxBytes: 64 << 10, LogIndexInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	defer rt.RemoveSandbox(context.Background(), "cap")
	if _, err := rt.CreateSandbox(t.Context(), sandbox.SandboxConfig{ID: "cap"}); err != nil {
		t.Fatal(err)
	}
	// ~1 MiB of numbered lines, slowly enough for the ticker to cap it.
	if _, err := rt.StartContainer(t.Context(), "cap", sandbox.ContainerConfig{Name: "a", RootfsLayers: rootfs,
		Args: []string{"sh", "-c", `i=0; while [ $i -lt 200 ]; do yes "$i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" | head -n 80; i=$((i+1)); sleep 0.01; done; echo last`}}); err != nil {
		t.Fatal(err)
	}
	<-rt.Exits()
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, "sandboxes/cap/containers/a/current.log"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size < 900_000 || st.Blocks*512 > 256<<10 {
		t.Errorf("log size %d, on disk %d: want > 900 KB written, < 256 KiB kept", st.Size, st.Blocks*512)
	}
	rc, err := rt.Logs(t.Context(), "cap", "a", sandbox.LogOptions{Tail: -1, Timestamps: true})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) < 100 || !strings.HasSuffix(lines[len(lines)-1], " last") || strings.Contains(string(b), "\x00") {
		t.Errorf("capped log: %d lines, last %q", len(lines), lines[len(lines)-1])
	}
	// Since: only lines from the last part of the run.
	first, _, _ := strings.Cut(lines[0], " ")
	t0, _ := time.Parse(time.RFC3339Nano, first)
	rc, _ = rt.Logs(t.Context(), "cap", "a", sandbox.LogOptions{Tail: -1, Since: t0.Add(time.Nanosecond)})
	b2, _ := io.ReadAll(rc)
	rc.Close()
	if len(b2) >= len(b) || len(b2) == 0 {
		t.Errorf("since %v: %d bytes of %d", t0, len(b2), len(b))
	}
}
