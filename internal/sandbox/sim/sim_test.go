package sim_test

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/skiffhq/skiff/internal/sandbox"
	"github.com/skiffhq/skiff/internal/sandbox/sandboxtest"
	"github.com/skiffhq/skiff/internal/sandbox/sim"
)

func TestConformance(t *testing.T) {
	sandboxtest.RunConformance(t, func(t *testing.T, stateDir string) sandbox.Runtime {
		rt, err := sim.New(sim.Config{StateFile: filepath.Join(stateDir, "sim.json")})
		if err != nil {
			t.Fatal(err)
		}
		return rt
	}, []string{"/unused"}, sandboxtest.Simulated())
}

func TestConfiguredBehaviour(t *testing.T) {
	boom := errors.New("boom")
	rt, err := sim.New(sim.Config{
		StartLatency: 20 * time.Millisecond,
		Exit: func(_ string, cfg sandbox.ContainerConfig) (time.Duration, int, bool) {
			return 10 * time.Millisecond, 3, cfg.Name == "job"
		},
		ExecError: boom,
		Usage:     sandbox.ContainerStats{CPUNanos: 5, MemoryUsed: 1 << 20, Pids: 2},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	ctx := t.Context()
	if _, err := rt.CreateSandbox(ctx, sandbox.SandboxConfig{ID: "s"}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for _, n := range []string{"job", "svc"} {
		if _, err := rt.StartContainer(ctx, "s", sandbox.ContainerConfig{Name: n, Args: []string{"x"}}); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(t0); d < 40*time.Millisecond {
		t.Errorf("two starts took %v, want the configured latency", d)
	}
	if ev := <-rt.Exits(); ev.Name != "job" || ev.ExitCode != 3 {
		t.Errorf("exit %+v", ev)
	}
	if _, err := rt.Exec(ctx, "s", "svc", sandbox.ExecConfig{Args: []string{"x"}, Stdout: &bytes.Buffer{}}); !errors.Is(err, boom) {
		t.Errorf("Exec: %v", err)
	}
	st, err := rt.Stats(ctx, "s")
	if err != nil || st.MemoryUsed != 1<<20 || st.Pids != 2 {
		t.Errorf("Stats = %+v, %v", st, err)
	}
}
