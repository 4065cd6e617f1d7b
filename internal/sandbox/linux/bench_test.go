package linux_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
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
	cpu0 := childrenCPU()
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
	// The workloads (sleep) are reaped by now; their CPU time is almost
	// all the init stage's, before exec.
	b.ReportMetric(float64(childrenCPU()-cpu0)/float64(b.N), "child-cpu-ns/op")
}

// childrenCPU is the user+sys time of this process's reaped children.
func childrenCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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

// BenchmarkCreateStartPool compares one group's CreateSandbox +
// StartContainer (sleep) from the warm pool with the cold path, in one
// runtime. Preparing the pool and removing the groups are outside the
// timer.
func BenchmarkCreateStartPool(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("privileged: needs root")
	}
	rootfs := sandboxtest.BusyboxRootfs(b)
	parent := fmt.Sprintf("skiff-poolbench-%d", os.Getpid())
	rt, err := linux.New(linux.Config{StateDir: b.TempDir(), CgroupParent: parent})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		rt.Close()
		for _, c := range []string{"cpu", "cpuacct", "memory", "pids", ""} {
			_ = os.Remove(filepath.Join("/sys/fs/cgroup", c, parent))
		}
	}()
	ctx := context.Background()
	class := sandbox.PoolClass{Name: "small", MilliCPU: 500, Memory: 128 << 20}
	seq := 0
	run := func(b *testing.B, pooled bool) {
		if pooled {
			for range b.N {
				if err := rt.PrepareSandbox(ctx, class); err != nil {
					b.Fatal(err)
				}
			}
		}
		ids := make([]string, 0, b.N)
		var create time.Duration
		cpu0 := selfCPU()
		b.ResetTimer()
		for range b.N {
			seq++
			id := fmt.Sprintf("g%d", seq)
			cfg := sandbox.SandboxConfig{ID: id, MilliCPU: class.MilliCPU, Memory: class.Memory}
			if pooled {
				cfg.PoolClass = class.Name
			}
			t0 := time.Now()
			info, err := rt.CreateSandbox(ctx, cfg)
			if err != nil {
				b.Fatal(err)
			}
			create += time.Since(t0)
			if info.FromPool != pooled {
				b.Fatalf("FromPool = %v", info.FromPool)
			}
			if _, err := rt.StartContainer(ctx, id, sandbox.ContainerConfig{Name: "c", RootfsLayers: rootfs, Args: []string{"sleep", "1000"}}); err != nil {
				b.Fatal(err)
			}
			ids = append(ids, id)
		}
		b.StopTimer()
		// CPU time is less disturbed by a busy machine than wall time.
		b.ReportMetric(float64((selfCPU()-cpu0).Nanoseconds())/float64(b.N), "runtime-cpu-ns/op")
		b.ReportMetric(float64(create.Nanoseconds())/float64(b.N), "create-ns/op")
		for _, id := range ids {
			if err := rt.RemoveSandbox(ctx, id); err != nil {
				b.Error(err)
			}
		}
	}
	b.Run("cold", func(b *testing.B) { run(b, false) })
	b.Run("pool", func(b *testing.B) { run(b, true) })
}

// selfCPU is the user+sys time of this process (the runtime).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkStartWithIdleSandboxes measures StartContainer (sleep) with
// SKIFF_BENCH_IDLE (default 1000) idle sandboxes on the host, and reports
// the cost of a host `unshare -m true` next to it: a start clones a mount
// namespace, which copies the host's mount table, so any per-sandbox
// mount in the host namespace makes every start slower.
func BenchmarkStartWithIdleSandboxes(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("privileged: needs root")
	}
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("SKIFF_BENCH_IDLE")); err == nil && v >= 0 {
		n = v
	}
	rootfs := sandboxtest.BusyboxRootfs(b)
	parent := fmt.Sprintf("skiff-idlebench-%d", os.Getpid())
	rt, err := linux.New(linux.Config{StateDir: b.TempDir(), CgroupParent: parent})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	ids := []string{"probe"}
	defer func() {
		for _, id := range ids {
			if err := rt.RemoveSandbox(ctx, id); err != nil {
				b.Error(err)
			}
		}
		rt.Close()
		for _, c := range []string{"cpu", "cpuacct", "memory", "pids", ""} {
			_ = os.Remove(filepath.Join("/sys/fs/cgroup", c, parent))
		}
	}()
	for i := range n {
		id := fmt.Sprintf("idle%d", i)
		if _, err := rt.CreateSandbox(ctx, sandbox.SandboxConfig{ID: id}); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, id)
	}
	if _, err := rt.CreateSandbox(ctx, sandbox.SandboxConfig{ID: "probe"}); err != nil {
		b.Fatal(err)
	}
	mounts := strings.Count(readFile("/proc/self/mountinfo"), "\n")
	unshare := func() time.Duration {
		best := time.Duration(1 << 62)
		for range 5 {
			t0 := time.Now()
			if err := exec.Command("unshare", "-m", "true").Run(); err != nil {
				b.Skipf("unshare: %v", err)
			}
			best = min(best, time.Since(t0))
		}
		return best
	}
	b.ResetTimer()
	for i := range b.N {
		name := fmt.Sprintf("c%d", i)
		if _, err := rt.StartContainer(ctx, "probe", sandbox.ContainerConfig{Name: name, RootfsLayers: rootfs, Args: []string{"sleep", "1000"}}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := rt.StopContainer(ctx, "probe", name, 0); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(unshare().Nanoseconds()), "unshare-m-ns")
	b.ReportMetric(float64(mounts), "host-mounts")
}
