package sandboxtest

import (
	"errors"
	"testing"

	"github.com/skiffhq/skiff/internal/sandbox"
)

// testVolumeUpdate checks sandbox.VolumeUpdater, for runtimes that
// implement it: an update of a files volume succeeds, before and after a
// new runtime over the same state; a missing sandbox is ErrNotFound; a
// volume that is missing or not a files volume, or a path that leaves the
// volume, is ErrInvalid.
func testVolumeUpdate(t *testing.T, e *env) {
	if _, ok := e.rt.(sandbox.VolumeUpdater); !ok {
		t.Skip("the runtime does not implement sandbox.VolumeUpdater")
	}
	cfg := sandbox.SandboxConfig{ID: "volup", Hostname: "volup", Volumes: []sandbox.VolumeConfig{
		{Name: "cfg", Kind: "files", Files: []sandbox.File{{Path: "a", Content: []byte("1")}}},
		{Name: "tmp", Kind: "emptyDir"},
	}}
	if _, err := e.rt.CreateSandbox(e.ctx, cfg); err != nil {
		t.Fatal(err)
	}
	update := func(sb, vol string, files ...sandbox.File) error {
		return e.rt.(sandbox.VolumeUpdater).UpdateVolume(e.ctx, sb, vol, files)
	}
	if err := update("volup", "cfg", sandbox.File{Path: "b/c", Content: []byte("2"), Mode: 0o600}); err != nil {
		t.Fatalf("UpdateVolume: %v", err)
	}
	for _, c := range []struct {
		sb, vol string
		files   []sandbox.File
		want    error
	}{
		{"nosuch", "cfg", nil, sandbox.ErrNotFound},
		{"volup", "nosuch", nil, sandbox.ErrInvalid},
		{"volup", "tmp", nil, sandbox.ErrInvalid},
		{"volup", "cfg", []sandbox.File{{Path: "../x"}}, sandbox.ErrInvalid},
		{"volup", "cfg", []sandbox.File{{Path: "/abs"}}, sandbox.ErrInvalid},
	} {
		if err := update(c.sb, c.vol, c.files...); !errors.Is(err, c.want) {
			t.Errorf("UpdateVolume(%s, %s, %v): %v, want %v", c.sb, c.vol, c.files, err, c.want)
		}
	}
	if err := e.rt.Close(); err != nil {
		t.Fatal(err)
	}
	e.open()
	if _, ok := e.rt.(sandbox.VolumeUpdater); !ok {
		t.Fatal("the new runtime is not a VolumeUpdater")
	}
	if err := update("volup", "cfg", sandbox.File{Path: "a", Content: []byte("3")}); err != nil {
		t.Errorf("UpdateVolume after a new runtime: %v", err)
	}
}
