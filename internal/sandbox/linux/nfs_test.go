package linux_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skiffhq/skiff/internal/nfs/nfstest"
	"github.com/skiffhq/skiff/internal/sandbox"
	"github.com/skiffhq/skiff/internal/sandbox/linux"
	"github.com/skiffhq/skiff/internal/sandbox/sandboxtest"
)

// TestNFSVolume runs groups with an NFS volume against a real server
// (ganesha): one writes, another reads through a read-only mount, and
// removal leaves no mount and no client process.
func TestNFSVolume(t *testing.T) {
	privileged(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	srv := nfstest.Start(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	state := t.TempDir()
	t.Cleanup(func() { removeCgroupParent(t) })
	rt, err := linux.New(linux.Config{StateDir: state, CgroupParent: cgroupParent(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // whichever runtime is current then
		for _, id := range []string{"nfs-w", "nfs-r", "nfs-bad"} {
			_ = rt.RemoveSandbox(context.Background(), id) // after a failure
		}
		rt.Close()
	})
	ctx := t.Context()
	vol := func(server, path string, ro bool) sandbox.VolumeConfig {
		return sandbox.VolumeConfig{Name: "data", Kind: "nfs", NFS: &sandbox.NFSVolume{Server: server, Path: path, ReadOnly: ro}}
	}
	run := func(sb, name string, args ...string) (int, string) {
		t.Helper()
		if _, err := rt.StartContainer(ctx, sb, sandbox.ContainerConfig{Name: name, RootfsLayers: rootfs, Args: args,
			Mounts: []sandbox.Mount{{Volume: "data", Destination: "/data"}}}); err != nil {
			t.Fatalf("StartContainer: %v", err)
		}
		var ev sandbox.ExitEvent
		select {
		case ev = <-rt.Exits():
		case <-time.After(30 * time.Second):
			t.Fatal("no exit")
		}
		rc, err := rt.Logs(ctx, sb, name, sandbox.LogOptions{Tail: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(rc)
		return ev.ExitCode, b.String()
	}

	// A group writes, as its root (a user-namespaced uid on the host that
	// the client maps back to 0 for the server).
	if _, err := rt.CreateSandbox(ctx, sandbox.SandboxConfig{ID: "nfs-w", Volumes: []sandbox.VolumeConfig{vol(srv.Host, srv.Dir, false)}}); err != nil {
		t.Fatal(err)
	}
	code, out := run("nfs-w", "c", "sh", "-c", "echo hello > /data/out.txt && mkdir -p /data/sub && echo x > /data/sub/y && mv /data/sub/y /data/sub/z && ls -n /data/out.txt | awk '{print $3}'")
	if code != 0 || strings.TrimSpace(out) != "0" {
		t.Fatalf("writer: exit %d, output %q", code, out)
	}
	if b, err := os.ReadFile(filepath.Join(srv.Dir, "out.txt")); err != nil || string(b) != "hello\n" {
		t.Fatalf("on the server: %q %v", b, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(srv.Dir, "sub/z"), &st); err != nil || st.Uid != 0 {
		t.Fatalf("server-side owner of a file the container's root made: %d %v", st.Uid, err)
	}

	// A subPath that does not exist yet is made (as for emptyDirs), and a
	// non-root user writes as itself: the server sees uid 1000.
	sub := func(name string, uid uint32, script string) {
		t.Helper()
		if _, err := rt.StartContainer(ctx, "nfs-w", sandbox.ContainerConfig{Name: name, RootfsLayers: rootfs, UID: uid, GID: uid,
			Args: []string{"sh", "-c", script}, Mounts: []sandbox.Mount{{Volume: "data", Destination: "/team", SubPath: "team"}}}); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-rt.Exits():
			if ev.ExitCode != 0 {
				rc, _ := rt.Logs(ctx, "nfs-w", name, sandbox.LogOptions{Tail: -1})
				var b bytes.Buffer
				_, _ = b.ReadFrom(rc)
				t.Fatalf("subPath container %s as uid %d: exit %d: %s", name, uid, ev.ExitCode, b.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no exit")
		}
	}
	sub("sub-root", 0, "echo root > /team/r && chmod 1777 /team")
	sub("sub-user", 1000, "echo mine > /team/u && ! rm /team/r 2>/dev/null")
	for f, uid := range map[string]uint32{"team/r": 0, "team/u": 1000} {
		if err := syscall.Stat(filepath.Join(srv.Dir, f), &st); err != nil || st.Uid != uid {
			t.Fatalf("server-side owner of %s: %d, want %d (%v)", f, st.Uid, uid, err)
		}
	}

	// The client outlives the runtime (an agent restart): a new runtime
	// over the same state finds the volume still mounted.
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	if rt, err = linux.New(linux.Config{StateDir: state, CgroupParent: cgroupParent(t)}); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if code, out := run("nfs-w", "c2", "sh", "-c", "cat /data/out.txt && echo again >> /data/out.txt"); code != 0 || out != "hello\n" {
		t.Fatalf("after a runtime restart: exit %d, output %q", code, out)
	}
	if b, _ := os.ReadFile(filepath.Join(srv.Dir, "out.txt")); string(b) != "hello\nagain\n" {
		t.Fatalf("on the server after a runtime restart: %q", b)
	}

	// Another group reads it through a read-only mount, and cannot write.
	if _, err := rt.CreateSandbox(ctx, sandbox.SandboxConfig{ID: "nfs-r", Volumes: []sandbox.VolumeConfig{vol(srv.Host, srv.Dir, true)}}); err != nil {
		t.Fatal(err)
	}
	code, out = run("nfs-r", "c", "sh", "-c", "cat /data/out.txt; touch /data/new 2>&1 && echo wrote || echo refused")
	if code != 0 || !strings.HasPrefix(out, "hello\nagain\n") || !strings.Contains(out, "refused") {
		t.Fatalf("reader: exit %d, output %q", code, out)
	}
	if _, err := os.Stat(filepath.Join(srv.Dir, "new")); err == nil {
		t.Fatal("a read-only mount wrote to the server")
	}
	if pids := nfsClients(); len(pids) != 2 {
		t.Errorf("%d nfs client processes, want 2", len(pids))
	} else {
		for _, pid := range pids {
			st, _ := os.ReadFile(filepath.Join("/proc", pid, "status"))
			for _, l := range strings.Split(string(st), "\n") {
				if strings.HasPrefix(l, "VmRSS:") {
					t.Logf("nfs client %s: %s", pid, strings.Join(strings.Fields(l), " "))
				}
			}
		}
	}

	for _, id := range []string{"nfs-w", "nfs-r"} {
		if err := rt.RemoveSandbox(ctx, id); err != nil {
			t.Fatalf("RemoveSandbox %s: %v", id, err)
		}
	}
	noLeftovers(t, state)
	if b, _ := os.ReadFile(filepath.Join(srv.Dir, "out.txt")); string(b) != "hello\nagain\n" {
		t.Fatal("removing the group touched the export")
	}

	// A server that cannot be reached, an export that does not exist:
	// the sandbox fails, in bounded time, with the reason.
	for _, tc := range []struct{ server, path, want string }{
		{"192.0.2.1", "/share", "192.0.2.1"},
		{srv.Host, "/no/such/export", "/no/such/export"},
	} {
		start := time.Now()
		_, err := rt.CreateSandbox(ctx, sandbox.SandboxConfig{ID: "nfs-bad", Volumes: []sandbox.VolumeConfig{vol(tc.server, tc.path, false)}})
		if err == nil || !errors.Is(err, sandbox.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("mount of %s:%s: %v", tc.server, tc.path, err)
		}
		if d := time.Since(start); d > 40*time.Second {
			t.Fatalf("failed mount took %v", d)
		}
		t.Logf("%s:%s: %v", tc.server, tc.path, err)
		noLeftovers(t, state)
	}

	// Bad values never reach a mount.
	for _, v := range []*sandbox.NFSVolume{{Server: "-o", Path: "/x"}, {Server: "h", Path: "x"}, {Server: "", Path: "/"}, {Server: "h", Path: "/a/../b"}} {
		_, err := rt.CreateSandbox(ctx, sandbox.SandboxConfig{ID: "nfs-bad", Volumes: []sandbox.VolumeConfig{{Name: "data", Kind: "nfs", NFS: v}}})
		if !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("%+v: %v", v, err)
		}
	}
}

// nfsClients lists the pids of the skiff-nfs processes on the host.
func nfsClients() []string {
	var pids []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.HasPrefix(b, []byte("skiff-nfs\x00")) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

func noLeftovers(t *testing.T, state string) {
	t.Helper()
	if pids := nfsClients(); len(pids) != 0 {
		t.Errorf("leak: nfs client processes %v", pids)
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fs := strings.Fields(s.Text()); len(fs) > 4 && (strings.HasPrefix(fs[4], filepath.Join(state, "sandboxes")) || strings.Contains(s.Text(), "fuse.nfs")) {
			t.Errorf("leak: mount %s", s.Text())
		}
	}
	ents, _ := os.ReadDir(filepath.Join(state, "sandboxes"))
	for _, e := range ents {
		t.Errorf("leak: sandbox dir %s", e.Name())
	}
}
