package integration

import (
	"context"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

// TestCluster runs the scenarios that can share one fleet: a server and
// three hosts (1 GiB and 8 vCPU of schedulable capacity each, two zones,
// labels). Each subtest deletes its own groups when it ends.
func TestCluster(t *testing.T) {
	requireRoot(t)
	cl := newCluster(t, clusterOptions{agents: threeHosts(cidrsShared, "1Gi")})
	cl.importImage(t, 3)

	t.Run("Lifecycle", func(t *testing.T) { testLifecycle(t, cl) })
	t.Run("Scheduling", func(t *testing.T) { testScheduling(t, cl) })
	t.Run("RestartPolicies", func(t *testing.T) { testRestartPolicies(t, cl) })
	t.Run("PodSharing", func(t *testing.T) { testPodSharing(t, cl) })
	t.Run("BadInput", func(t *testing.T) { testBadInput(t, cl) })
}

// importImage imports the busybox image and checks it reached wantHosts
// hosts.
func (cl *cluster) importImage(t *testing.T, wantHosts int) {
	t.Helper()
	res, err := cl.c.ImportImage(ctxT(t, 120*time.Second), imageTar, nil)
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	if len(res.Hosts) != wantHosts {
		t.Errorf("import went to %d hosts, want %d: %+v", len(res.Hosts), wantHosts, res.Hosts)
	}
	for _, h := range res.Hosts {
		if h.Error != "" {
			t.Errorf("import on host %s: %s", h.HostID, h.Error)
		}
	}
	found := false
	for _, im := range res.Images {
		if im.Ref == "busybox:latest" || im.Ref == "docker.io/library/busybox:latest" {
			found = true
		}
	}
	if !found {
		t.Fatalf("import result has no busybox:latest: %+v", res.Images)
	}
	imgs, err := cl.c.Images(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range imgs {
		if (im.Ref == "busybox:latest" || im.Ref == "docker.io/library/busybox:latest") && len(im.Hosts) != wantHosts {
			t.Errorf("image %s listed on hosts %v, want %d hosts", im.Ref, im.Hosts, wantHosts)
		}
	}
}

// deleteLabeled force-deletes every group with label k=v and waits until
// they are gone. Subtests register it with t.Cleanup.
func (cl *cluster) deleteLabeled(t *testing.T, k, v string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	gs, err := cl.c.ListAllGroups(ctx, client.ListOptions{Labels: map[string]string{k: v}, All: true})
	if err != nil {
		t.Errorf("cleanup: list %s=%s: %v", k, v, err)
		return
	}
	for _, g := range gs {
		if _, err := cl.c.DeleteGroup(ctx, g.ID, true); err != nil && !client.IsNotFound(err) {
			t.Errorf("cleanup: delete %s: %v", g.Name, err)
		}
	}
	err = poll(60*time.Second, func() (bool, error) {
		gs, err := cl.c.ListAllGroups(ctx, client.ListOptions{Labels: map[string]string{k: v}, All: true})
		return err == nil && len(gs) == 0, nil
	})
	if err != nil {
		t.Errorf("cleanup: groups %s=%s still there after 60s", k, v)
	}
}

// labelsFor returns the labels a subtest puts on its groups, and registers
// their deletion.
func (cl *cluster) labelsFor(t *testing.T, suite string) map[string]string {
	t.Cleanup(func() { cl.deleteLabeled(t, "suite", suite) })
	return map[string]string{"suite": suite}
}

func int64p(v int64) *int64 { return &v }

// firstContainer returns the group's only container status.
func firstContainer(t *testing.T, g *api.Group) api.ContainerStatus {
	t.Helper()
	if len(g.Containers) == 0 {
		t.Fatalf("group %s has no container status: %s", g.Name, describe(g))
	}
	return g.Containers[0]
}
