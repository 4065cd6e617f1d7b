package sim

import (
	"context"
	"fmt"
	"path"
	"strings"

	"github.com/skiffhq/skiff/internal/sandbox"
)

type simVolume struct {
	Kind  string
	Files []sandbox.File `json:",omitempty"`
}

var _ sandbox.VolumeUpdater = (*Runtime)(nil)

func simVolumes(vols []sandbox.VolumeConfig) map[string]*simVolume {
	if len(vols) == 0 {
		return nil
	}
	m := make(map[string]*simVolume, len(vols))
	for _, v := range vols {
		m[v.Name] = &simVolume{Kind: v.Kind, Files: v.Files}
	}
	return m
}

// UpdateVolume implements sandbox.VolumeUpdater: the files are kept (and
// saved with the state), nothing is written anywhere.
func (r *Runtime) UpdateVolume(ctx context.Context, sandboxID, name string, files []sandbox.File) error {
	for _, f := range files {
		p := path.Clean(f.Path)
		if f.Path == "" || path.IsAbs(p) || strings.HasPrefix(p, "..") {
			return fmt.Errorf("%w: volume %q: file path %q", sandbox.ErrInvalid, name, f.Path)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed() {
		return sandbox.ErrUnavailable
	}
	sb := r.sbs[sandboxID]
	if sb == nil {
		return fmt.Errorf("%w: sandbox %q", sandbox.ErrNotFound, sandboxID)
	}
	v := sb.Volumes[name]
	if v == nil || v.Kind != "files" {
		return fmt.Errorf("%w: sandbox %q has no files volume %q", sandbox.ErrInvalid, sandboxID, name)
	}
	v.Files = append([]sandbox.File(nil), files...)
	r.save()
	return nil
}

// VolumeFiles returns the files of a files volume, for tests.
func (r *Runtime) VolumeFiles(sandboxID, name string) ([]sandbox.File, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sb := r.sbs[sandboxID]
	if sb == nil || sb.Volumes[name] == nil {
		return nil, fmt.Errorf("%w: sandbox %q volume %q", sandbox.ErrNotFound, sandboxID, name)
	}
	return append([]sandbox.File(nil), sb.Volumes[name].Files...), nil
}
