package linux_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiffhq/skiff/internal/sandbox"
)

// TestStartOneProcess: the init stage does its work in the process that
// becomes the workload, so the container's pid namespace has never had a
// pid other than 1 when the workload starts.
func TestStartOneProcess(t *testing.T) {
	e := newEnv(t, sandbox.SandboxConfig{ID: "one"})
	ev, out := e.run(sandbox.ContainerConfig{Name: "a", Args: []string{"cat", "/proc/sys/kernel/ns_last_pid"}})
	if ev.ExitCode != 0 || out != "1\n" {
		t.Errorf("exit %d, last pid %q, want 1", ev.ExitCode, out)
	}
	// The C lookup skips a missing directory and an empty entry in PATH;
	// the working directory is set.
	ev, out = e.run(sandbox.ContainerConfig{Name: "b", Env: []string{"PATH=/nonexistent::/bin"}, WorkingDir: "/etc",
		Args: []string{"sh", "-c", "pwd"}})
	if ev.ExitCode != 0 || out != "/etc\n" {
		t.Errorf("exit %d, output %q", ev.ExitCode, out)
	}
}

// TestStartErrors: what a user reads when the program cannot run.
func TestStartErrors(t *testing.T) {
	e := newEnv(t, sandbox.SandboxConfig{ID: "errs"})
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"/nope"}, nil, `exec: "/nope": no such file or directory`},
		{[]string{"/etc"}, nil, `exec: "/etc": is a directory`},
		{[]string{"/etc/hosts"}, nil, `exec: "/etc/hosts": permission denied`},
		{[]string{"nope"}, nil, `exec: "nope": executable file not found in $PATH`},
		{[]string{"sh"}, []string{"PATH="}, `exec: "sh": executable file not found in $PATH`},
		{[]string{"sh", "a\x00b"}, nil, "NUL byte"},
		{[]string{"true"}, []string{"A=\x00"}, "NUL byte"},
	} {
		cfg := sandbox.ContainerConfig{Name: "a", RootfsLayers: e.fs, Args: tc.args, Env: tc.env}
		_, err := e.rt.StartContainer(t.Context(), e.sb, cfg)
		if !errors.Is(err, sandbox.ErrCannotRun) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want ErrCannotRun with %q", tc.args, err, tc.want)
		}
	}
	// Layers whose overlay options do not fit in the page mount(2) reads.
	layers, base := append([]string(nil), e.fs...), t.TempDir()
	for i := range 40 {
		d := filepath.Join(base, fmt.Sprintf("%03d%s", i, strings.Repeat("x", 100)))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		layers = append(layers, d)
	}
	cfg := sandbox.ContainerConfig{Name: "a", RootfsLayers: layers, Args: []string{"true"}}
	if _, err := e.rt.StartContainer(t.Context(), e.sb, cfg); !errors.Is(err, sandbox.ErrCannotRun) || !strings.Contains(err.Error(), "at most 4095") {
		t.Errorf("long overlay options: %v", err)
	}
}
