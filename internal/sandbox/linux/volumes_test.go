package linux_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/skiffhq/skiff/internal/sandbox"
	"github.com/skiffhq/skiff/internal/sandbox/linux"
	"github.com/skiffhq/skiff/internal/sandbox/sandboxtest"
)

// TestUpdateVolume replaces the files of a running sandbox's files volume
// with no process in it: a container that mounts the volume read-only sees
// the new set (modes kept, owned by its root under the user namespace),
// and a subPath-less mount follows the swap.
func TestUpdateVolume(t *testing.T) {
	e := newEnv(t, sandbox.SandboxConfig{ID: "volup", Volumes: []sandbox.VolumeConfig{
		{Name: "cfg", Kind: "files", Files: []sandbox.File{{Path: "a.txt", Content: []byte("one"), Mode: 0o600}, {Path: "old.txt", Content: []byte("old")}}},
		{Name: "scratch", Kind: "emptyDir"},
	}})
	if _, err := e.rt.StartContainer(t.Context(), e.sb, sandbox.ContainerConfig{Name: "c", RootfsLayers: e.fs,
		Args: []string{"sleep", "3600"}, Mounts: []sandbox.Mount{{Volume: "cfg", Destination: "/cfg", ReadOnly: true}}}); err != nil {
		t.Fatal(err)
	}
	sh := func(cmd string) string {
		t.Helper()
		var out bytes.Buffer
		code, err := e.rt.Exec(t.Context(), e.sb, "c", sandbox.ExecConfig{Args: []string{"sh", "-c", cmd}, Stdout: &out, Stderr: &out})
		if err != nil || code != 0 {
			t.Fatalf("exec %q: %d %v: %s", cmd, code, err, out.String())
		}
		return out.String()
	}
	if got := sh("cat /cfg/a.txt"); got != "one" {
		t.Fatalf("before: %q", got)
	}
	err := e.rt.UpdateVolume(t.Context(), e.sb, "cfg", []sandbox.File{
		{Path: "a.txt", Content: []byte("two"), Mode: 0o640}, {Path: "dir/b.txt", Content: []byte("bee")}})
	if err != nil {
		t.Fatal(err)
	}
	got := sh("cat /cfg/a.txt; echo; cat /cfg/dir/b.txt; echo; stat -L -c '%a %u' /cfg/a.txt; test -e /cfg/old.txt && echo old-still-there; true")
	if want := "two\nbee\n640 0\n"; got != want {
		t.Errorf("after update: %q, want %q", got, want)
	}
	for _, c := range []struct {
		sb, vol string
		files   []sandbox.File
		want    error
	}{
		{"nosuch", "cfg", nil, sandbox.ErrNotFound},
		{e.sb, "nosuch", nil, sandbox.ErrInvalid},
		{e.sb, "scratch", nil, sandbox.ErrInvalid},
		{e.sb, "cfg", []sandbox.File{{Path: "../escape"}}, sandbox.ErrInvalid},
	} {
		if err := e.rt.UpdateVolume(t.Context(), c.sb, c.vol, c.files); !errors.Is(err, c.want) {
			t.Errorf("UpdateVolume(%s, %s): %v, want %v", c.sb, c.vol, err, c.want)
		}
	}
	if strings.Contains(sh("cat /cfg/a.txt"), "one") {
		t.Error("a failed update changed the volume")
	}
}

// BenchmarkCreateStartFilesVolume is BenchmarkCreateStart for a group
// shaped like a Kubernetes pod: a files volume of three files (the
// service-account token, ca.crt, namespace) mounted read-only.
func BenchmarkCreateStartFilesVolume(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("privileged: needs root")
	}
	rootfs := sandboxtest.BusyboxRootfs(b)
	rt, err := linux.New(linux.Config{StateDir: b.TempDir(), CgroupParent: "skiff-bench-vol"})
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close()
	defer func() {
		for _, c := range []string{"cpu", "cpuacct", "memory", "pids", ""} {
			_ = os.Remove("/sys/fs/cgroup/" + c + "/skiff-bench-vol")
		}
	}()
	files := []sandbox.File{{Path: "token", Content: bytes.Repeat([]byte("t"), 1000)},
		{Path: "ca.crt", Content: bytes.Repeat([]byte("c"), 1100)}, {Path: "namespace", Content: []byte("default")}}
	ctx := context.Background()
	n := 0
	for _, bc := range []struct {
		name      string
		mount, ro bool
	}{{"unmounted", false, false}, {"mounted", true, false}, {"mounted-ro", true, true}} {
		b.Run(bc.name, func(b *testing.B) {
			var ids []string
			for range b.N {
				n++
				id := fmt.Sprintf("v%d", n)
				if _, err := rt.CreateSandbox(ctx, sandbox.SandboxConfig{ID: id, Volumes: []sandbox.VolumeConfig{{Name: "sa", Kind: "files", Files: files}}}); err != nil {
					b.Fatal(err)
				}
				cfg := sandbox.ContainerConfig{Name: "c", RootfsLayers: rootfs, Args: []string{"sleep", "1000"}}
				if bc.mount {
					cfg.Mounts = []sandbox.Mount{{Volume: "sa", Destination: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: bc.ro}}
				}
				if _, err := rt.StartContainer(ctx, id, cfg); err != nil {
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
		})
	}
}
