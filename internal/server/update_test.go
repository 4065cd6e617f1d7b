package server

import (
	"errors"
	"testing"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
)

func TestApplyGroupUpdate(t *testing.T) {
	base := func(st api.Status, host string) *api.Group {
		return &api.Group{ID: "g-1", Name: "web", Status: st, HostID: host, Spec: api.GroupSpec{
			Containers: []api.Container{{Name: "a", Image: "busybox", Command: []string{"sleep", "1"}, Env: []api.EnvVar{{Name: "X", Value: "1"}}}}}}
	}
	cpu := api.CPU(2000)
	for _, tc := range []struct {
		name    string
		status  api.Status
		host    string
		req     api.UpdateGroupRequest
		wantErr error
		check   func(t *testing.T, g *api.Group)
	}{
		{name: "tags in place", status: api.StatusSucceeded, host: "h", req: api.UpdateGroupRequest{Tags: map[string]string{"a": "b"}},
			check: func(t *testing.T, g *api.Group) {
				if g.SpecGeneration != 0 || g.Status != api.StatusSucceeded || g.Spec.Tags["a"] != "b" {
					t.Fatalf("%+v", g)
				}
			}},
		{name: "placed: restart with the new spec", status: api.StatusRunning, host: "h",
			req: api.UpdateGroupRequest{Containers: []api.Container{{Name: "a", Image: "busybox:2"}}},
			check: func(t *testing.T, g *api.Group) {
				if g.SpecGeneration != 1 || g.Status != api.StatusUpdating || g.Spec.Containers[0].Image != "busybox:2" || g.Spec.Containers[0].Command != nil {
					t.Fatalf("%+v", g)
				}
			}},
		{name: "incremental merges by name", status: api.StatusRunning, host: "h", req: api.UpdateGroupRequest{Incremental: true,
			Containers: []api.Container{{Name: "a", Env: []api.EnvVar{{Name: "Y", Value: "2"}, {Name: "X", Value: "9"}}}, {Name: "b", Image: "busybox"}}},
			check: func(t *testing.T, g *api.Group) {
				c := g.Spec.Containers
				if len(c) != 2 || c[0].Image != "busybox" || len(c[0].Command) != 2 || len(c[0].Env) != 2 || c[0].Env[0].Value != "9" || c[1].Name != "b" {
					t.Fatalf("%+v", c)
				}
			}},
		{name: "not placed: new spec, no restart", status: api.StatusPending, req: api.UpdateGroupRequest{CPU: &cpu},
			check: func(t *testing.T, g *api.Group) {
				if g.SpecGeneration != 0 || g.Status != api.StatusPending || g.Spec.CPU != 2000 {
					t.Fatalf("%+v", g)
				}
			}},
		{name: "ended group", status: api.StatusFailed, host: "h", req: api.UpdateGroupRequest{CPU: &cpu}, wantErr: errdefs.ErrIncorrectStat},
		{name: "invalid", status: api.StatusRunning, host: "h", req: api.UpdateGroupRequest{Containers: []api.Container{{Name: "a"}}}, wantErr: errdefs.ErrInvalid},
		{name: "mount of no volume", status: api.StatusRunning, host: "h", req: api.UpdateGroupRequest{Incremental: true,
			Containers: []api.Container{{Name: "a", VolumeMounts: []api.VolumeMount{{Name: "v", MountPath: "/v"}}}}}, wantErr: errdefs.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := base(tc.status, tc.host)
			err := applyGroupUpdate(g, &tc.req)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, g)
		})
	}
}
