package linux_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiffhq/skiff/internal/sandbox"
	"github.com/skiffhq/skiff/internal/sandbox/linux"
	"github.com/skiffhq/skiff/internal/sandbox/sandboxtest"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, what string, get func() string, ok func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := get()
		if ok(s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: timed out; have %q", what, s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func logOf(t *testing.T, rt sandbox.Runtime, sb, name string) string {
	rc, err := rt.Logs(context.Background(), sb, name, sandbox.LogOptions{Tail: -1})
	if err != nil {
		t.Fatalf("Logs: %v", err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

// attached is one Attach in progress.
type attached struct {
	in     *io.PipeWriter
	out    *syncBuf
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

func attach(t *testing.T, rt sandbox.Runtime, sb, name string) *attached {
	t.Helper()
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	a := &attached{in: pw, out: &syncBuf{}, cancel: cancel, done: make(chan error, 1)}
	resize := make(chan sandbox.TermSize, 1)
	resize <- sandbox.TermSize{Rows: 33, Cols: 111}
	go func() {
		a.done <- rt.(sandbox.Attacher).Attach(ctx, sb, name, sandbox.AttachConfig{Stdin: pr, Stdout: a.out, Resize: resize})
	}()
	t.Cleanup(func() { a.stop() })
	return a
}

func (a *attached) send(t *testing.T, s string) {
	t.Helper()
	if _, err := a.in.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// stop ends the attachment and returns what Attach returned.
func (a *attached) stop() error {
	a.once.Do(func() {
		a.cancel()
		a.in.Close()
		select {
		case a.err = <-a.done:
		case <-time.After(5 * time.Second):
			a.err = errors.New("Attach did not return")
		}
	})
	return a.err
}

func relayPID(t *testing.T, stateDir, sb, name string) int {
	t.Helper()
	var st struct{ RelayPID int }
	b, err := os.ReadFile(filepath.Join(stateDir, "sandboxes", sb, "containers", name, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st.RelayPID
}

func alive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && !bytes.HasPrefix(bytes.TrimSpace(b[i+1:]), []byte("Z"))
}

// TestAttachTTY: a TTY container gets a terminal on its own devpts; attach
// drives it; its output also lands in the log; a new Runtime over the same
// state dir (the agent restarted) attaches again; RemoveSandbox leaves no
// relay.
func TestAttachTTY(t *testing.T) {
	privileged(t)
	fs := sandboxtest.BusyboxRootfs(t)
	dir := t.TempDir()
	parent := cgroupParent(t)
	t.Cleanup(func() { removeCgroupParent(t) })
	t.Cleanup(func() { leakCheck(parent)(t, dir) })
	rt, err := linux.New(linux.Config{StateDir: dir, CgroupParent: parent})
	if err != nil {
		t.Fatal(err)
	}
	const sb = "ttysb"
	if _, err := rt.CreateSandbox(t.Context(), sandbox.SandboxConfig{ID: sb, Hostname: "tty"}); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.StartContainer(t.Context(), sb, sandbox.ContainerConfig{Name: "sh", RootfsLayers: fs,
		Args: []string{"sh"}, Env: []string{"TERM=xterm"}, TTY: true, Stdin: true}); err != nil {
		rt.RemoveSandbox(context.Background(), sb)
		t.Fatal(err)
	}
	relay := relayPID(t, dir, sb, "sh")
	if relay == 0 || !alive(relay) {
		t.Errorf("relay pid %d not running", relay)
	}

	a := attach(t, rt, sb, "sh")
	a.send(t, "tty; stty size\n")
	a.send(t, "echo hi\n")
	waitFor(t, "tty output", a.out.String, func(s string) bool {
		return strings.Contains(s, "/dev/pts/") && strings.Contains(s, "\nhi\r\n") && strings.Contains(s, "33 111")
	})
	if strings.Contains(a.out.String(), "not a tty") {
		t.Errorf("tty output %q", a.out.String())
	}
	waitFor(t, "log", func() string { return logOf(t, rt, sb, "sh") }, func(s string) bool {
		return strings.Contains(s, "/dev/pts/") && strings.Contains(s, "\nhi")
	})
	if err := a.stop(); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Attach: %v", err)
	}

	// The agent restarts: a new Runtime over the same state dir.
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	rt2, err := linux.New(linux.Config{StateDir: dir, CgroupParent: parent})
	if err != nil {
		t.Fatal(err)
	}
	defer rt2.Close()
	if !alive(relay) {
		t.Errorf("relay died with the runtime")
	}
	a2 := attach(t, rt2, sb, "sh")
	a2.send(t, "echo again-$((40+2))\n")
	waitFor(t, "re-attach output", a2.out.String, func(s string) bool { return strings.Contains(s, "again-42") })
	waitFor(t, "log after re-attach", func() string { return logOf(t, rt2, sb, "sh") }, func(s string) bool {
		return strings.Contains(s, "again-42")
	})

	if err := rt2.RemoveSandbox(context.Background(), sb); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-a2.done:
		if err != nil {
			t.Errorf("Attach after remove: %v", err)
		}
		a2.once.Do(func() {})
	case <-time.After(10 * time.Second):
		t.Errorf("Attach did not end with the container")
	}
	if alive(relay) {
		t.Errorf("relay %d still running after RemoveSandbox", relay)
	}
}

// TestAttachStdin: a container with stdin and no TTY gets a pipe; what is
// attached goes to it, and `cat` echoes it into the log and back to the
// client. StopContainer ends the relay. A container with neither has no
// relay.
func TestAttachStdin(t *testing.T) {
	e := newEnv(t, sandbox.SandboxConfig{ID: "stdinsb"})
	if _, err := e.rt.StartContainer(t.Context(), e.sb, sandbox.ContainerConfig{Name: "cat", RootfsLayers: e.fs,
		Args: []string{"cat"}, Stdin: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.StartContainer(t.Context(), e.sb, sandbox.ContainerConfig{Name: "plain", RootfsLayers: e.fs,
		Args: []string{"sleep", "1000"}}); err != nil {
		t.Fatal(err)
	}
	if pid := relayPID(t, e.state, e.sb, "plain"); pid != 0 {
		t.Errorf("a container without tty or stdin has a relay (%d)", pid)
	}
	if err := e.rt.Attach(t.Context(), e.sb, "plain", sandbox.AttachConfig{}); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("Attach to a plain container: %v, want ErrInvalid", err)
	}
	relay := relayPID(t, e.state, e.sb, "cat")
	if relay == 0 || !alive(relay) {
		t.Fatalf("relay pid %d not running", relay)
	}
	a := attach(t, e.rt, e.sb, "cat")
	a.send(t, "hello cat\n")
	waitFor(t, "attached output", a.out.String, func(s string) bool { return s == "hello cat\n" })
	waitFor(t, "log", func() string { return logOf(t, e.rt, e.sb, "cat") }, func(s string) bool { return s == "hello cat\n" })
	if err := a.stop(); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Attach: %v", err)
	}
	// A second attach (the first one is gone) still reaches the same stdin.
	a2 := attach(t, e.rt, e.sb, "cat")
	a2.send(t, "second\n")
	waitFor(t, "log", func() string { return logOf(t, e.rt, e.sb, "cat") }, func(s string) bool { return s == "hello cat\nsecond\n" })

	if err := e.rt.StopContainer(t.Context(), e.sb, "cat", time.Second); err != nil {
		t.Fatal(err)
	}
	if alive(relay) {
		t.Errorf("relay %d still running after StopContainer", relay)
	}
	if err := e.rt.Attach(t.Context(), e.sb, "cat", sandbox.AttachConfig{}); !errors.Is(err, sandbox.ErrNotRunning) {
		t.Errorf("Attach to a stopped container: %v, want ErrNotRunning", err)
	}
}
