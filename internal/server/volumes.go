package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
)

// Live updates of a group's config-file volume (Kubernetes' ConfigMap,
// Secret and token updates): the group's host rewrites the volume in
// place, atomically, with no process in the group; the group's record
// then carries the new files, so GET shows them.

func (a *apiHandler) updateVolume(w http.ResponseWriter, r *http.Request) error {
	var v api.ConfigFileVolume
	if err := decodeStrict(r.Body, &v); err != nil {
		return err
	}
	if err := v.Validate(); err != nil {
		return errdefs.Invalid(err.Error())
	}
	g, err := a.svc.UpdateVolume(r.Context(), callerFrom(r.Context()), r.PathValue("id"), r.PathValue("name"), &v)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, g)
	return nil
}

// UpdateVolume replaces the files of the config-file volume name of a
// running group and returns the group with its new record.
func (s *Service) UpdateVolume(ctx context.Context, c Caller, idOrName, name string, v *api.ConfigFileVolume) (*api.Group, error) {
	g, err := s.resolve(ctx, c, idOrName)
	if err != nil {
		return nil, err
	}
	found := false
	for _, sv := range g.Spec.Volumes {
		if sv.Name == name {
			if sv.ConfigFile == nil {
				return nil, errdefs.Invalid(fmt.Sprintf("volume %q is not a configFile volume", name))
			}
			found = true
		}
	}
	if !found {
		return nil, errdefs.Userf(errdefs.ErrNotFound, fmt.Sprintf("group %s has no volume %q", g.Name, name))
	}
	if g.Deleting || g.Status.Terminal() {
		return nil, errdefs.Userf(errdefs.ErrIncorrectStat, fmt.Sprintf("group %s is %s", g.Name, g.Status))
	}
	g, cl, err := s.hostOf(ctx, c, g.ID)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://agent/host/v1/groups/"+g.ID+"/volumes/"+url.PathEscape(name), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := cl.Do(req)
	if err != nil {
		return nil, errdefs.Userf(errdefs.ErrUnavailable, "host "+g.HostID+": "+err.Error())
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		return nil, hostError(resp)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	// The host has the new files; the record follows, so that a GET (and
	// a sandbox built again from the record) has them too.
	return s.store.UpdateGroup(ctx, g.ID, func(g *api.Group) error {
		for i := range g.Spec.Volumes {
			if g.Spec.Volumes[i].Name == name && g.Spec.Volumes[i].ConfigFile != nil {
				cp := *v
				g.Spec.Volumes[i].ConfigFile = &cp
			}
		}
		return nil
	})
}
