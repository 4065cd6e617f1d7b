package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
)

// testPodSharing: containers of one group share the network, IPC and UTS
// namespaces and volumes; with shareProcessNamespace they see each other's
// processes too, and without it they do not.
func testPodSharing(t *testing.T, cl *cluster) {
	labels := cl.labelsFor(t, "pod")
	spec := func(sharePID bool) api.GroupSpec {
		s := busybox("sh", "-c", "echo from-a > /shared/a; exec sleep 3600")
		s.Containers[0].Name = "a"
		s.Containers = append(s.Containers, api.Container{Name: "b", Image: "busybox:latest", Command: []string{"sleep", "3601"}})
		s.Volumes = []api.Volume{{Name: "shared", EmptyDir: &api.EmptyDirVolume{}}}
		for i := range s.Containers {
			s.Containers[i].VolumeMounts = []api.VolumeMount{{Name: "shared", MountPath: "/shared"}}
		}
		s.ShareProcessNamespace = sharePID
		return s
	}
	shared := cl.create(t, "share-pid", spec(true), labels)
	apart := cl.create(t, "own-pid", spec(false), labels)
	for _, g := range []*api.Group{shared, apart} {
		cl.waitStatus(t, nil, g.ID, api.StatusRunning, 60*time.Second)
	}
	exec := func(g *api.Group, container string, argv ...string) string {
		t.Helper()
		res, err := cl.c.Exec(ctxT(t, 30*time.Second), g.ID, api.ExecRequest{Container: container, Command: argv})
		if err != nil {
			t.Fatalf("exec %v in %s/%s: %v", argv, g.Name, container, err)
		}
		return res.Stdout + res.Stderr
	}
	t.Run("VolumeShared", func(t *testing.T) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			out := exec(apart, "b", "cat", "/shared/a")
			if strings.Contains(out, "from-a") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("container b does not see a's file in the shared emptyDir: %q", out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	t.Run("NetworkAndUTSShared", func(t *testing.T) {
		if a, b := exec(apart, "a", "hostname"), exec(apart, "b", "hostname"); a != b {
			t.Errorf("hostnames differ: %q vs %q", a, b)
		}
		if a, b := exec(apart, "a", "cat", "/proc/net/dev"), exec(apart, "b", "cat", "/proc/net/dev"); !strings.Contains(a, "eth0") || !strings.Contains(b, "eth0") {
			t.Errorf("no eth0 in the group's network namespace: %q / %q", a, b)
		}
		na, nb := exec(apart, "a", "readlink", "/proc/self/ns/net"), exec(apart, "b", "readlink", "/proc/self/ns/net")
		if na != nb {
			t.Errorf("network namespaces differ: %q vs %q", na, nb)
		}
	})
	t.Run("ShareProcessNamespace", func(t *testing.T) {
		if out := exec(shared, "a", "ps"); !strings.Contains(out, "sleep 3601") {
			t.Errorf("with shareProcessNamespace, a does not see b's process:\n%s", out)
		}
		if out := exec(apart, "a", "ps"); strings.Contains(out, "sleep 3601") {
			t.Errorf("without shareProcessNamespace, a sees b's process:\n%s", out)
		}
	})
}
