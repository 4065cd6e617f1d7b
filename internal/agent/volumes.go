package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/sandbox"
)

// serveVolumeUpdate replaces the files of a running group's config-file
// volume through the runtime (sandbox.VolumeUpdater): atomically, with no
// process in the group, so it works for images without a shell.
func (a *Agent) serveVolumeUpdate(w http.ResponseWriter, r *http.Request) error {
	id, name := r.PathValue("id"), r.PathValue("name")
	var v api.ConfigFileVolume
	if err := json.NewDecoder(io.LimitReader(r.Body, 4<<20)).Decode(&v); err != nil {
		return errdefs.Invalid("malformed volume: " + err.Error())
	}
	if err := v.Validate(); err != nil {
		return errdefs.Invalid(err.Error())
	}
	a.mu.Lock()
	run := a.runners[id]
	a.mu.Unlock()
	if run == nil {
		return errdefs.Userf(errdefs.ErrNotFound, "group "+id+" is not running on this host")
	}
	up, ok := a.rt.(sandbox.VolumeUpdater)
	if !ok {
		return errdefs.Invalid(fmt.Sprintf("this host's runtime (%s) cannot update volumes", a.rt.Name()))
	}
	if err := up.UpdateVolume(r.Context(), id, name, configFiles(&v)); err != nil {
		return err
	}
	a.log.Info("volume updated", "group", id, "volume", name, "files", len(v.Items))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// configFiles turns a config-file volume into the runtime's files, each
// with its mode (the item's, else the volume's default, else 0644).
func configFiles(v *api.ConfigFileVolume) []sandbox.File {
	files := make([]sandbox.File, 0, len(v.Items))
	for _, it := range v.Items {
		mode := uint32(0o644)
		if v.DefaultMode != nil {
			mode = uint32(*v.DefaultMode)
		}
		if it.Mode != nil {
			mode = uint32(*it.Mode)
		}
		files = append(files, sandbox.File{Path: it.Path, Content: []byte(it.Content), Mode: mode})
	}
	return files
}
