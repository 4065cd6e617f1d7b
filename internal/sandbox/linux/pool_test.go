package linux_test

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/skiffhq/skiff/internal/sandbox"
	"github.com/skiffhq/skiff/internal/sandbox/linux"
	"github.com/skiffhq/skiff/internal/sandbox/sandboxtest"
)

// vethNet is a small Network for tests: a veth pair per sandbox, eth0
// inside with a /32 from 10.231.0.0/16, nothing else (no routes, no NAT).
type vethNet struct {
	t    testing.TB
	mu   sync.Mutex
	next int
	ips  map[string]string
}

func newVethNet(t testing.TB) *vethNet {
	n := &vethNet{t: t, ips: map[string]string{}}
	t.Cleanup(func() {
		// Detach is the runtime's job; whatever it left is a leak.
		n.mu.Lock()
		defer n.mu.Unlock()
		for id := range n.ips {
			t.Errorf("leak: network attachment of %s", id)
			if l, err := netlink.LinkByName(n.veth(id)); err == nil {
				_ = netlink.LinkDel(l)
			}
		}
	})
	return n
}

// veth names the host end: unique per test process and sandbox.
func (n *vethNet) veth(id string) string {
	h := fnv.New32a()
	fmt.Fprintf(h, "%d/%s", os.Getpid(), id)
	return fmt.Sprintf("skt%08x", h.Sum32())
}

func (n *vethNet) Attach(ctx context.Context, id, netnsPath string) (string, error) {
	n.mu.Lock()
	ip, ok := n.ips[id]
	if !ok {
		n.next++
		ip = fmt.Sprintf("10.231.%d.%d", n.next/250, n.next%250+1)
		n.ips[id] = ip
	}
	n.mu.Unlock()
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return "", err
	}
	defer ns.Close()
	la := netlink.NewLinkAttrs()
	la.Name = n.veth(id)
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns)}); err != nil {
		return "", fmt.Errorf("veth: %w", err)
	}
	host, err := netlink.LinkByName(la.Name)
	if err == nil {
		err = netlink.LinkSetUp(host)
	}
	if err != nil {
		return "", err
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return "", err
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return "", err
	}
	if err := h.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(ip), Mask: net.CIDRMask(32, 32)}}); err != nil {
		return "", err
	}
	return ip, h.LinkSetUp(eth0)
}

func (n *vethNet) Detach(ctx context.Context, id string) error {
	if l, err := netlink.LinkByName(n.veth(id)); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			return err
		}
	}
	n.mu.Lock()
	delete(n.ips, id)
	n.mu.Unlock()
	return nil
}

// TestConformanceWithNetwork runs the suite (the pool's part above all:
// prepared sandboxes are attached before they have a group) with a pod
// network, so that the IPs reported are checked inside the containers.
func TestConformanceWithNetwork(t *testing.T) {
	privileged(t)
	t.Cleanup(func() { removeCgroupParent(t) })
	netw := newVethNet(t)
	sandboxtest.RunConformance(t, func(t *testing.T, stateDir string) sandbox.Runtime {
		rt, err := linux.New(linux.Config{StateDir: stateDir, CgroupParent: cgroupParent(t), Network: netw})
		if err != nil {
			t.Fatalf("linux.New: %v", err)
		}
		return rt
	}, sandboxtest.BusyboxRootfs(t), sandboxtest.AfterEach(leakCheck(cgroupParent(t))))
}

// poolEnv is a runtime over a state dir with leak checks at the end.
func poolEnv(t *testing.T) (dir string, open func() *linux.Runtime) {
	privileged(t)
	dir = t.TempDir()
	parent := cgroupParent(t)
	t.Cleanup(func() { removeCgroupParent(t) })
	t.Cleanup(func() { leakCheck(parent)(t, dir) })
	var last *linux.Runtime
	t.Cleanup(func() {
		if last == nil {
			return
		}
		// A new runtime over the state removes everything: recovery is
		// part of what is tested.
		last.Close()
		rt, err := linux.New(linux.Config{StateDir: dir, CgroupParent: parent})
		if err != nil {
			t.Fatal(err)
		}
		defer rt.Close()
		ctx := context.Background()
		states, _ := rt.Recover(ctx)
		for _, st := range states {
			if err := rt.RemoveSandbox(ctx, st.ID); err != nil {
				t.Errorf("RemoveSandbox(%s): %v", st.ID, err)
			}
		}
		if _, err := rt.DrainPool(ctx, "", -1); err != nil {
			t.Errorf("DrainPool: %v", err)
		}
		if keys, err := linux.PinnedKeys(rt); err != nil || len(keys) > 0 {
			t.Errorf("leak: pins %v, %v", keys, err)
		}
	})
	return dir, func() *linux.Runtime {
		rt, err := linux.New(linux.Config{StateDir: dir, CgroupParent: parent})
		if err != nil {
			t.Fatal(err)
		}
		last = rt
		return rt
	}
}

// editState rewrites the sandbox.json of every prepared sandbox, as a
// crash at some point of a claim or a drain leaves it.
func editState(t *testing.T, dir string, edit func(st map[string]any)) {
	t.Helper()
	ms, _ := filepath.Glob(filepath.Join(dir, "sandboxes", "_p*", "sandbox.json"))
	if len(ms) == 0 {
		t.Fatal("no prepared sandbox on disk")
	}
	for _, m := range ms {
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		var st map[string]any
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		edit(st)
		if b, err = json.Marshal(st); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(m, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPoolCrash: sandboxes cut off while being claimed or drained are
// removed by the next Runtime, without a trace; the rest stays pooled.
func TestPoolCrash(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(st map[string]any)
	}{
		{"half-claimed", func(st map[string]any) { st["Config"].(map[string]any)["ID"] = "g" }},
		{"half-drained", func(st map[string]any) { delete(st, "Prepared") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, open := poolEnv(t)
			rt := open()
			if err := rt.PrepareSandbox(t.Context(), sandbox.PoolClass{Name: "c"}); err != nil {
				t.Fatal(err)
			}
			rt.Close()
			editState(t, dir, tc.edit)
			rt = open()
			if st := rt.PoolStats(); st["c"] != 0 {
				t.Errorf("PoolStats = %v, want the sandbox gone", st)
			}
			if states, _ := rt.Recover(t.Context()); len(states) != 0 {
				t.Errorf("Recover = %+v", states)
			}
		})
	}
}

// TestPoolPins: prepared sandboxes are pinned in the pin namespace, not in
// the host's mount table; the pin namespace goes once nothing is left.
func TestPoolPins(t *testing.T) {
	dir, open := poolEnv(t)
	rt := open()
	for range 3 {
		if err := rt.PrepareSandbox(t.Context(), sandbox.PoolClass{Name: "c", Memory: 32 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := linux.PinnedKeys(rt)
	if err != nil || len(keys) != 3 {
		t.Fatalf("pins = %v, %v; want 3", keys, err)
	}
	if m := hostMounts(dir); len(m) != 2 || m[0] != dir+"/pins" || m[1] != dir+"/pins/mnt" {
		t.Errorf("host mounts under the state dir: %v, want only the pin namespace's", m)
	}
	if _, err := rt.CreateSandbox(t.Context(), sandbox.SandboxConfig{ID: "g", PoolClass: "c"}); err != nil {
		t.Fatal(err)
	}
	if err := rt.RemoveSandbox(t.Context(), "g"); err != nil {
		t.Fatal(err)
	}
	if n, err := rt.DrainPool(t.Context(), "", -1); n != 2 || err != nil {
		t.Fatalf("DrainPool = %d, %v", n, err)
	}
	if keys, _ := linux.PinnedKeys(rt); len(keys) != 0 {
		t.Errorf("pins left: %v", keys)
	}
	rt.Close()
	if m := hostMounts(dir); len(m) != 0 {
		t.Errorf("host mounts left after Close: %v", m)
	}
}

func hostMounts(under string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], under+"/") {
			out = append(out, f[4])
		}
	}
	return out
}

// TestLegacyPins: a sandbox of the previous version (pins in the host
// mount namespace) is recovered, runs containers and is removed.
func TestLegacyPins(t *testing.T) {
	rootfs := sandboxtest.BusyboxRootfs(t)
	dir, open := poolEnv(t)
	rt := open()
	if err := linux.CreateLegacySandbox(rt, "old", "old-host"); err != nil {
		t.Fatal(err)
	}
	rt.Close()
	if m := hostMounts(dir); len(m) != 6 { // net, ipc, uts, user + the pin namespace's two
		t.Fatalf("host mounts = %v", m)
	}
	rt = open()
	states, _ := rt.Recover(t.Context())
	if len(states) != 1 || states[0].ID != "old" {
		t.Fatalf("Recover = %+v", states)
	}
	if _, err := rt.StartContainer(t.Context(), "old", sandbox.ContainerConfig{Name: "c", RootfsLayers: rootfs, Args: []string{"hostname"}}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-rt.Exits():
		if ev.ExitCode != 0 {
			t.Errorf("exit %+v", ev)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit")
	}
	rc, err := rt.Logs(t.Context(), "old", "c", sandbox.LogOptions{Tail: -1})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if strings.TrimSpace(string(b)) != "old-host" {
		t.Errorf("hostname %q", b)
	}
	if _, err := rt.Stats(t.Context(), "old"); err != nil {
		t.Errorf("Stats: %v", err)
	}
	if err := rt.RemoveSandbox(t.Context(), "old"); err != nil {
		t.Fatal(err)
	}
	if m := hostMounts(dir); len(m) != 2 {
		t.Errorf("host mounts after remove: %v", m)
	}
}

// TestPoolClaimShape: a claim by a group of another shape rewrites the
// limits (0: none), and the group's own parts — volumes, shared pid
// namespace — are made at the claim.
func TestPoolClaimShape(t *testing.T) {
	rootfs := sandboxtest.BusyboxRootfs(t)
	_, open := poolEnv(t)
	rt := open()
	if err := rt.PrepareSandbox(t.Context(), sandbox.PoolClass{Name: "c", MilliCPU: 500, Memory: 256 << 20}); err != nil {
		t.Fatal(err)
	}
	info, err := rt.CreateSandbox(t.Context(), sandbox.SandboxConfig{
		ID: "shaped", PoolClass: "c", Memory: 128 << 20, Pids: 50, SharePID: true,
		Volumes: []sandbox.VolumeConfig{
			{Name: "files", Kind: "files", Files: []sandbox.File{{Path: "f", Content: []byte("hello\n")}}},
			{Name: "mem", Kind: "memory"},
		},
	})
	if err != nil || !info.FromPool {
		t.Fatalf("CreateSandbox = %+v, %v", info, err)
	}
	_, err = rt.StartContainer(t.Context(), "shaped", sandbox.ContainerConfig{Name: "a", RootfsLayers: rootfs,
		Mounts: []sandbox.Mount{{Volume: "files", Destination: "/data"}, {Volume: "mem", Destination: "/mem"}},
		Args:   []string{"sh", "-c", "cat /data/f; touch /mem/x && echo mem ok; echo pid $$"}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-rt.Exits():
		if ev.ExitCode != 0 {
			t.Errorf("exit %+v", ev)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit")
	}
	rc, err := rt.Logs(t.Context(), "shaped", "a", sandbox.LogOptions{Tail: -1})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if out := string(b); !strings.Contains(out, "hello\nmem ok\n") || strings.Contains(out, "pid 1\n") {
		t.Errorf("output %q: want the volumes, and a pid other than 1 (the pause is 1)", out)
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return // the values below are v1 files
	}
	parent := cgroupParent(t)
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/memory", parent, "_p*"))
	if len(dirs) != 1 {
		t.Fatalf("cgroups of the claimed sandbox: %v", dirs)
	}
	key := filepath.Base(dirs[0])
	for f, want := range map[string]string{
		"cpu/" + parent + "/" + key + "/cpu.cfs_quota_us":         "-1",
		"memory/" + parent + "/" + key + "/memory.limit_in_bytes": fmt.Sprint(128 << 20),
		"pids/" + parent + "/" + key + "/pids.max":                "50",
	} {
		b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", f))
		if err != nil || strings.TrimSpace(string(b)) != want {
			t.Errorf("%s = %q, %v; want %s", f, b, err, want)
		}
	}
}

// TestPinsOnSharedMount: the state dir on a shared mount with a peer in
// another mount namespace, as on a systemd host, where a mount
// namespace's file cannot be bind-mounted (it would propagate).
func TestPinsOnSharedMount(t *testing.T) {
	privileged(t)
	base := t.TempDir()
	if err := syscall.Mount(base, base, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(base, syscall.MNT_DETACH) })
	if err := syscall.Mount("", base, "", syscall.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	peer, err := linux.PeerMountNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(peer) })
	dir := filepath.Join(base, "state")
	parent := cgroupParent(t)
	t.Cleanup(func() { removeCgroupParent(t) })
	t.Cleanup(func() { leakCheck(parent)(t, dir) })
	rt, err := linux.New(linux.Config{StateDir: dir, CgroupParent: parent})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	if err := rt.PrepareSandbox(t.Context(), sandbox.PoolClass{Name: "c"}); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.CreateSandbox(t.Context(), sandbox.SandboxConfig{ID: "g", PoolClass: "c"}); err != nil {
		t.Fatal(err)
	}
	if err := rt.RemoveSandbox(t.Context(), "g"); err != nil {
		t.Fatal(err)
	}
}
