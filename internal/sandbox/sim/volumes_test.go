package sim_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/skiffhq/skiff/internal/sandbox"
	"github.com/skiffhq/skiff/internal/sandbox/sim"
)

func TestUpdateVolume(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state.json")
	rt, err := sim.New(sim.Config{StateFile: state})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := rt.CreateSandbox(ctx, sandbox.SandboxConfig{ID: "s", Volumes: []sandbox.VolumeConfig{
		{Name: "cfg", Kind: "files", Files: []sandbox.File{{Path: "a", Content: []byte("1")}}},
		{Name: "tmp", Kind: "emptyDir"},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := rt.UpdateVolume(ctx, "s", "cfg", []sandbox.File{{Path: "b", Content: []byte("2"), Mode: 0o600}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		sb, vol string
		files   []sandbox.File
		want    error
	}{
		{"nosuch", "cfg", nil, sandbox.ErrNotFound},
		{"s", "tmp", nil, sandbox.ErrInvalid},
		{"s", "nosuch", nil, sandbox.ErrInvalid},
		{"s", "cfg", []sandbox.File{{Path: "../x"}}, sandbox.ErrInvalid},
	} {
		if err := rt.UpdateVolume(ctx, c.sb, c.vol, c.files); !errors.Is(err, c.want) {
			t.Errorf("UpdateVolume(%s, %s): %v, want %v", c.sb, c.vol, err, c.want)
		}
	}
	rt.Close()
	// The files survive a new runtime over the same state.
	rt, err = sim.New(sim.Config{StateFile: state})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	fs, err := rt.VolumeFiles("s", "cfg")
	if err != nil || len(fs) != 1 || fs[0].Path != "b" || string(fs[0].Content) != "2" || fs[0].Mode != 0o600 {
		t.Errorf("after restart: %+v, %v", fs, err)
	}
}
