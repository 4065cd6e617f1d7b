package server

import (
	"context"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/client"
)

// TestUpdateVolumeAndDeleteGrace drives a volume update and a delete with
// a grace period of its own through a real agent (simulated runtime): the
// record carries the new files, another account can do neither, and bad
// input changes nothing.
func TestUpdateVolumeAndDeleteGrace(t *testing.T) {
	ts := startServer(t)
	startSimAgent(t, ts, 4000, 8<<30)
	ctx := context.Background()
	cl, err := client.New(ts.cfg)
	if err != nil {
		t.Fatal(err)
	}
	grace := int64(30)
	req := api.CreateGroupRequest{Name: "vol", Spec: api.GroupSpec{
		TerminationGracePeriodSeconds: &grace,
		Containers: []api.Container{{Name: "c", Image: "busybox", Command: []string{"sleep", "3600"},
			VolumeMounts: []api.VolumeMount{{Name: "cfg", MountPath: "/cfg"}}}},
		Volumes: []api.Volume{
			{Name: "cfg", ConfigFile: &api.ConfigFileVolume{Items: []api.ConfigFileItem{{Path: "a", Content: "1"}}}},
			{Name: "tmp", EmptyDir: &api.EmptyDirVolume{}},
		},
	}}
	g, _, err := cl.CreateGroup(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Wait(ctx, g.ID, api.StatusRunning, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	other := ts.newAccount(t, "other", api.Quota{MilliCPU: 1000, Memory: 1 << 30, Groups: 2})
	ocl, err := client.New(ts.asAccount(other.Key).cfg)
	if err != nil {
		t.Fatal(err)
	}
	upd := api.ConfigFileVolume{Items: []api.ConfigFileItem{{Path: "b", Content: "2"}}}
	if _, err := ocl.UpdateVolume(ctx, g.ID, "cfg", upd); !client.IsNotFound(err) {
		t.Errorf("another account's update: %v, want not found", err)
	}
	for _, c := range []struct {
		vol  string
		v    api.ConfigFileVolume
		code int
	}{
		{"nosuch", upd, 404},
		{"tmp", upd, 400},
		{"cfg", api.ConfigFileVolume{Items: []api.ConfigFileItem{{Path: "../x"}}}, 400},
		{"cfg", api.ConfigFileVolume{Items: []api.ConfigFileItem{{Path: "/abs"}}}, 400},
	} {
		if _, err := cl.UpdateVolume(ctx, g.ID, c.vol, c.v); client.StatusCode(err) != c.code {
			t.Errorf("update %s %+v: %v, want %d", c.vol, c.v, err, c.code)
		}
	}
	ng, err := cl.UpdateVolume(ctx, g.ID, "cfg", upd)
	if err != nil {
		t.Fatal(err)
	}
	if it := ng.Spec.Volumes[0].ConfigFile.Items; len(it) != 1 || it[0].Path != "b" {
		t.Errorf("record after update: %+v", it)
	}

	// Delete with a grace period of its own.
	for _, bad := range []string{"-1", "3601", "x", "1.5"} {
		code, out := ts.do(t, "DELETE", "/v1/groups/"+g.ID+"?gracePeriodSeconds="+bad, nil, nil)
		if code != 400 {
			t.Errorf("gracePeriodSeconds=%s: %d %s", bad, code, out)
		}
	}
	if cur, err := cl.GetGroup(ctx, g.ID); err != nil || cur.Deleting {
		t.Fatalf("a rejected delete changed the group: %+v %v", cur, err)
	}
	if _, err := ocl.DeleteGroupGrace(ctx, g.ID, 0); !client.IsNotFound(err) {
		t.Errorf("another account's delete: %v, want not found", err)
	}
	dg, err := cl.DeleteGroupGrace(ctx, g.ID, 7)
	if err != nil {
		t.Fatal(err)
	}
	if p := dg.Spec.TerminationGracePeriodSeconds; !dg.Deleting || p == nil || *p != 7 {
		t.Errorf("after delete with grace 7: deleting %v, grace %v", dg.Deleting, p)
	}
	if err := waitGone(ctx, cl, g.ID); err != nil {
		t.Fatal(err)
	}
}

func waitGone(ctx context.Context, cl *client.Client, id string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := cl.GetGroup(ctx, id)
		if client.IsNotFound(err) {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
