package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	ecisdk "github.com/aliyun/alibaba-cloud-sdk-go/services/eci"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/agent"
	"github.com/skiffhq/skiff/internal/nfs/nfstest"
	"github.com/skiffhq/skiff/internal/sandbox"
	"github.com/skiffhq/skiff/internal/sandbox/linux"
)

// startLinuxAgent joins a real agent with the real sandbox runtime (no
// pod network) and imports a busybox image into it. Groups must be
// deleted before the test ends: workloads outlive the agent.
func startLinuxAgent(t *testing.T, ts *testServer) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("privileged: the real sandbox runtime needs root")
	}
	parent := fmt.Sprintf("skiff-test-%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), os.Getpid())
	t.Cleanup(func() {
		for _, d := range []string{filepath.Join("/sys/fs/cgroup", parent), "/sys/fs/cgroup/cpu/" + parent, "/sys/fs/cgroup/memory/" + parent, "/sys/fs/cgroup/pids/" + parent, "/sys/fs/cgroup/cpuacct/" + parent} {
			_ = os.Remove(d)
		}
	})
	dir := t.TempDir()
	runAgent(t, ts, agent.Config{DataDir: dir, Name: "linux1",
		Capacity: api.Resources{MilliCPU: 4000, Memory: 4 << 30, Groups: 20},
		NewRuntime: func(string) (sandbox.Runtime, error) {
			return linux.New(linux.Config{StateDir: filepath.Join(dir, "sandboxes"), CgroupParent: parent})
		}})
}

// TestECINFSVolume creates groups with an NFSVolume through the official
// SDK, on a real host, against a real NFS server (ganesha).
func TestECINFSVolume(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("privileged")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	srv := nfstest.Start(t)
	ts := startServer(t)
	startLinuxAgent(t, ts)
	cl := ts.adminECI(t)
	var ids []string
	t.Cleanup(func() { // after a failure: the agent's stop would leave them running
		for _, id := range ids {
			dr := ecisdk.CreateDeleteContainerGroupRequest()
			dr.RegionId = testRegion
			dr.ContainerGroupId = id
			_, _ = cl.DeleteContainerGroup(dr)
		}
		for deadline := time.Now().Add(30 * time.Second); ts.count(t) > 0 && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
		}
	})

	create := func(name, server, script string, ro bool) string {
		t.Helper()
		r := ecisdk.CreateCreateContainerGroupRequest()
		r.RegionId = testRegion
		r.ContainerGroupName = name
		r.RestartPolicy = "Never"
		r.TerminationGracePeriodSeconds = requests.NewInteger(0)
		r.Volume = &[]ecisdk.CreateContainerGroupVolume{{Name: "share", Type: "NFSVolume",
			NFSVolume: ecisdk.CreateContainerGroupNFSVolume{Server: server, Path: srv.Dir, ReadOnly: requests.NewBoolean(ro)}}}
		r.Container = &[]ecisdk.CreateContainerGroupContainer{{Name: "main", Image: "busybox", Command: []string{"sh", "-c", script},
			VolumeMount: &[]ecisdk.CreateContainerGroupVolumeMount{{Name: "share", MountPath: "/mnt/share"}}}}
		resp, err := cl.CreateContainerGroup(r)
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		ids = append(ids, resp.ContainerGroupId)
		return resp.ContainerGroupId
	}
	logs := func(id string) string {
		t.Helper()
		lr := ecisdk.CreateDescribeContainerLogRequest()
		lr.RegionId = testRegion
		lr.ContainerGroupId = id
		lr.ContainerName = "main"
		out, err := cl.DescribeContainerLog(lr)
		if err != nil {
			t.Fatal(err)
		}
		return out.Content
	}

	w := create("nfs-writer", srv.Host, "echo written-by-eci > /mnt/share/eci.txt && echo done", false)
	g := waitStatus(t, cl, w, "Succeeded", "Failed")
	if g.Status != "Succeeded" {
		t.Fatalf("writer: %s %+v\n%s", g.Status, g.Events, logs(w))
	}
	if b, err := os.ReadFile(filepath.Join(srv.Dir, "eci.txt")); err != nil || string(b) != "written-by-eci\n" {
		t.Fatalf("on the server: %q %v", b, err)
	}
	if v := g.Volumes; len(v) != 1 || v[0].Type != "NFSVolume" || v[0].NFSVolumeServer != srv.Host || v[0].NFSVolumePath != srv.Dir || v[0].NFSVolumeReadOnly {
		t.Fatalf("described volumes: %+v", v)
	}

	r := create("nfs-reader", srv.Host, "cat /mnt/share/eci.txt; touch /mnt/share/nope 2>/dev/null && echo wrote || echo refused", true)
	if g := waitStatus(t, cl, r, "Succeeded", "Failed"); g.Status != "Succeeded" {
		t.Fatalf("reader: %s %+v", g.Status, g.Events)
	}
	if out := logs(r); out != "written-by-eci\nrefused\n" {
		t.Fatalf("reader output %q", out)
	}

	// A server nobody answers for: the group fails with the reason.
	bad := create("nfs-unreachable", "192.0.2.1", "true", false)
	waitStatus(t, cl, bad, "Failed")
	ev, err := common(t, cl, "DescribeContainerGroupEvents", map[string]string{"RegionId": testRegion, "ContainerGroupIds": `["` + bad + `"]`})
	if err != nil {
		t.Fatal(err)
	}
	why, _ := json.Marshal(ev)
	t.Logf("events of the failed group: %s", why)
	if !bytes.Contains(why, []byte("FailedCreateSandbox")) || !bytes.Contains(why, []byte("192.0.2.1")) {
		t.Errorf("failed group's events do not name the server: %s", why)
	}

	for _, id := range []string{w, r, bad} {
		dr := ecisdk.CreateDeleteContainerGroupRequest()
		dr.RegionId = testRegion
		dr.ContainerGroupId = id
		if _, err := cl.DeleteContainerGroup(dr); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for ts.count(t) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("groups not gone after delete")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Nothing of the volumes is left: no FUSE mount, no client process.
	for err := nfsLeftovers(); err != nil; err = nfsLeftovers() {
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func nfsLeftovers() error {
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if bytes.Contains(mi, []byte("fuse.nfs")) {
		return errors.New("leak: an nfs FUSE mount is left")
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && bytes.HasPrefix(b, []byte("skiff-nfs\x00")) {
			return fmt.Errorf("leak: nfs client process %s", e.Name())
		}
	}
	return nil
}
