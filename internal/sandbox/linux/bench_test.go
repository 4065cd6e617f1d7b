package linux_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiffhq/skiff/internal/sandbox"
	"github.com/skiffhq/skiff/internal/sandbox/linux"
	"github.com/skiffhq/skiff/internal/sandbox/sandboxtest"
)

// BenchmarkCreateStart measures one group: CreateSandbox + StartContainer
// (sleep) — the cold path, no warm pool. Removal is outside the timer.
func BenchmarkCreateStart(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("privileged: needs root")
	}
	rootfs := sandboxtest.BusyboxRootfs(b)
	dir := b.TempDir()
	rt, err := linux.New(linux.Config{StateDir: dir, CgroupParent: "skiff-bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close()
	defer func() {
		for _, c := range []string{"cpu", "cpuacct", "memory", "pids", ""} {
			_ = os.Remove("/sys/fs/cgroup/" + c + "/skiff-bench")
		}
	}()
	ctx := context.Background()
	ids := make([]string, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprintf("b%d", i)
		if _, err := rt.CreateSandbox(ctx, sandbox.SandboxConfig{ID: id}); err != nil {
			b.Fatal(err)
		}
		if _, err := rt.StartContainer(ctx, id, sandbox.ContainerConfig{Name: "c", RootfsLayers: rootfs, Args: []string{"sleep", "1000"}}); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, id)
	}
	b.StopTimer()
	for _, id := range ids {
		if err := rt.RemoveSandbox(ctx, id); err != nil {
			b.Error(err)
		}
	}
}

// BenchmarkIdleGroupHostMemory starts N idle groups (busybox sleep; N from
// SKIFF_BENCH_GROUPS, default 200) and reports the host memory each adds
// beyond its workload: everything the runtime and the kernel charge for
// it (namespaces, mounts, cgroups, page tables of the init stage, the
// runtime's own heap, state files) minus what the workload's own cgroup
// is charged (its pages, page tables, kernel stack). The runtime (this
// process) runs in a memory cgroup of its own with the groups below it,
// so the figure is not disturbed by the rest of the machine. Kernel
// memory that is not charged to cgroups is not in bytes/group; the
// machine-wide MemAvailable delta (noisy) is reported next to it.
func BenchmarkIdleGroupHostMemory(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("privileged: needs root")
	}
	memRoot := "/sys/fs/cgroup/memory"
	if _, err := os.Stat(filepath.Join(memRoot, "memory.usage_in_bytes")); err != nil {
		b.Skip("needs the v1 memory controller at " + memRoot)
	}
	n := 200
	if v, err := strconv.Atoi(os.Getenv("SKIFF_BENCH_GROUPS")); err == nil && v > 0 {
		n = v
	}
	rootfs := sandboxtest.BusyboxRootfs(b)
	name := fmt.Sprintf("skiff-membench-%d", os.Getpid())
	memcg := filepath.Join(memRoot, name)
	if err := os.Mkdir(memcg, 0o755); err != nil {
		b.Fatal(err)
	}
	orig := selfMemcg(b)
	if err := os.WriteFile(filepath.Join(memcg, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
		b.Fatal(err)
	}
	parent := name + "/groups"
	defer func() {
		_ = os.WriteFile(filepath.Join(memRoot, orig, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0)
		for _, c := range []string{"cpu", "cpuacct", "memory", "pids"} {
			_ = os.Remove(filepath.Join("/sys/fs/cgroup", c, parent))
			_ = os.Remove(filepath.Join("/sys/fs/cgroup", c, name))
		}
	}()
	rt, err := linux.New(linux.Config{StateDir: b.TempDir(), CgroupParent: parent})
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close()
	ctx := context.Background()
	start := func(id string) {
		if _, err := rt.CreateSandbox(ctx, sandbox.SandboxConfig{ID: id}); err != nil {
			b.Fatal(err)
		}
		if _, err := rt.StartContainer(ctx, id, sandbox.ContainerConfig{Name: "c", RootfsLayers: rootfs, Args: []string{"sleep", "3600"}}); err != nil {
			b.Fatal(err)
		}
	}
	settle := func() {
		time.Sleep(500 * time.Millisecond)
		runtime.GC()
		debug.FreeOSMemory()
	}
	usage := func(rel string) int64 {
		v, _ := strconv.ParseInt(strings.TrimSpace(readFile(filepath.Join(memRoot, rel, "memory.usage_in_bytes"))), 10, 64)
		return v
	}
	// Warm up: caches of the binary and the rootfs, the runtime's maps.
	for i := range 3 {
		start(fmt.Sprintf("w%d", i))
	}
	for i := range 3 {
		if err := rt.RemoveSandbox(ctx, fmt.Sprintf("w%d", i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		settle()
		u0, avail0 := usage(name), memAvailable()
		for i := range n {
			start(fmt.Sprintf("g%d", i))
		}
		settle()
		u1, avail1 := usage(name), memAvailable()
		var workload int64
		for i := range n {
			workload += usage(fmt.Sprintf("%s/g%d/c", parent, i))
		}
		b.StopTimer()
		b.ReportMetric(float64(u1-u0-workload)/float64(n), "bytes/group")
		b.ReportMetric(float64(workload)/float64(n), "workload-bytes/group")
		b.ReportMetric(float64(avail0-avail1)/float64(n), "memavailable-bytes/group")
		for i := range n {
			if err := rt.RemoveSandbox(ctx, fmt.Sprintf("g%d", i)); err != nil {
				b.Error(err)
			}
		}
		b.StartTimer()
	}
}

func selfMemcg(b *testing.B) string {
	for _, l := range strings.Split(readFile("/proc/self/cgroup"), "\n") {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 && strings.Contains(","+f[1]+",", ",memory,") {
			return f[2]
		}
	}
	b.Fatal("no memory cgroup in /proc/self/cgroup")
	return ""
}

func memAvailable() int64 {
	for _, l := range strings.Split(readFile("/proc/meminfo"), "\n") {
		if v, ok := strings.CutPrefix(l, "MemAvailable:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}
