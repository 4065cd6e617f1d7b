package linux_test

import (
	"context"
	"fmt"
	"os"
	"testing"

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
