package linux

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/skiffhq/skiff/internal/sandbox"
)

// A files volume is laid out as the kubelet's atomic writer lays out a
// ConfigMap volume, so that an update is one rename:
//
//	volumes/NAME/..gen_123/app/conf.txt   the files of one generation
//	volumes/NAME/..data -> ..gen_123      the current generation
//	volumes/NAME/app -> ..data/app        one link per top-level name
//
// An update writes a new generation, swaps ..data with rename(2), fixes
// the top-level links (which only change when the set of names does) and
// removes the old generation. Names starting with ".." are reserved.

const dataLink = "..data"

var _ sandbox.VolumeUpdater = (*Runtime)(nil)

// UpdateVolume implements sandbox.VolumeUpdater.
func (r *Runtime) UpdateVolume(ctx context.Context, sandboxID, name string, files []sandbox.File) error {
	if err := checkFiles(name, files); err != nil {
		return err
	}
	sb, err := r.sandbox(sandboxID)
	if err != nil {
		return err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.removed || !sb.st.Complete {
		return fmt.Errorf("%w: sandbox %q", sandbox.ErrNotFound, sandboxID)
	}
	for _, v := range sb.st.Config.Volumes {
		if v.Name != name {
			continue
		}
		if v.Kind != "files" {
			return fmt.Errorf("%w: volume %q is a %s volume, not a files volume", sandbox.ErrInvalid, name, v.Kind)
		}
		return writeFiles(filepath.Join(sb.dir, "volumes", name), files, sb.st.HostID)
	}
	return fmt.Errorf("%w: sandbox %q has no volume %q", sandbox.ErrInvalid, sandboxID, name)
}

// checkFiles validates the paths of a files volume: relative, below the
// volume, not in the reserved ".." names. A path given twice: the last
// one wins.
func checkFiles(vol string, files []sandbox.File) error {
	for _, f := range files {
		if !localPath(f.Path) || strings.HasPrefix(filepath.Clean(f.Path), "..") {
			return fmt.Errorf("%w: volume %q: file path %q", sandbox.ErrInvalid, vol, f.Path)
		}
	}
	return nil
}

// writeFiles makes files the content of the files volume at dir (see the
// layout above). With a user namespace (hostID not 0) everything written
// belongs to the container's root.
func writeFiles(dir string, files []sandbox.File, hostID uint32) error {
	if err := checkFiles(filepath.Base(dir), files); err != nil {
		return err
	}
	gen, err := os.MkdirTemp(dir, "..gen_")
	if err != nil {
		return fmt.Errorf("volume %s: %w", filepath.Base(dir), err)
	}
	fail := func(err error) error {
		_ = os.RemoveAll(gen)
		return fmt.Errorf("volume %s: %w", filepath.Base(dir), err)
	}
	if err := os.Chmod(gen, 0o755); err != nil {
		return fail(err)
	}
	tops := map[string]bool{}
	for _, f := range files {
		rel := filepath.Clean(f.Path)
		tops[strings.SplitN(rel, string(filepath.Separator), 2)[0]] = true
		p := filepath.Join(gen, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fail(err)
		}
		mode := os.FileMode(f.Mode & 0o7777)
		if mode == 0 {
			mode = 0o644
		}
		if err := os.WriteFile(p, f.Content, mode); err != nil {
			return fail(err)
		}
		if err := os.Chmod(p, mode); err != nil { // not subject to umask
			return fail(err)
		}
	}
	if hostID != 0 {
		if err := chownTree(gen, hostID); err != nil {
			return fail(err)
		}
	}
	if err := replaceLink(dir, filepath.Base(gen), dataLink, hostID); err != nil {
		return fail(err)
	}
	// From here on the new files are what readers see.
	for top := range tops {
		if err := replaceLink(dir, filepath.Join(dataLink, top), top, hostID); err != nil {
			return fmt.Errorf("volume %s: %w", filepath.Base(dir), err)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("volume %s: %w", filepath.Base(dir), err)
	}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		switch {
		case name == filepath.Base(gen) || name == dataLink:
		case strings.HasPrefix(name, "..gen_"):
			// The previous generation, or one a failed update left.
			errs = append(errs, os.RemoveAll(filepath.Join(dir, name)))
		case !tops[name]:
			// A name no longer in the set: only our own links go.
			if t, err := os.Readlink(filepath.Join(dir, name)); err == nil && strings.HasPrefix(t, dataLink+string(filepath.Separator)) {
				errs = append(errs, os.Remove(filepath.Join(dir, name)))
			}
		}
	}
	return errors.Join(errs...)
}

// replaceLink points dir/name at target, atomically: a new link renamed
// over the old one. Whatever was at name before (a file or a directory of
// a volume written by an earlier version) is replaced.
func replaceLink(dir, target, name string, hostID uint32) error {
	p := filepath.Join(dir, name)
	if cur, err := os.Readlink(p); err == nil && cur == target {
		return nil
	}
	tmp := filepath.Join(dir, "..tmp_"+strings.ReplaceAll(name, string(filepath.Separator), "_"))
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if hostID != 0 {
		if err := os.Lchown(tmp, int(hostID), int(hostID)); err != nil {
			_ = os.Remove(tmp)
			return err
		}
	}
	if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
		// rename(2) does not replace a directory with a link.
		if err := os.RemoveAll(p); err != nil {
			_ = os.Remove(tmp)
			return err
		}
	}
	if err := os.Rename(tmp, p); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}
