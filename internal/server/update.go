package server

import (
	"context"
	"fmt"
	"net/http"
	"reflect"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
)

// UpdateGroup changes a group (ECI's UpdateContainerGroup, the native
// PATCH /v1/groups/{id}). The new spec must validate as a create would;
// an invalid one changes nothing. Tags, restart policy, deadline and grace
// period change in place, in any state but deleting. An update that
// changes what runs is allowed while the group is Pending or Running (as
// ECI has it): a group not yet placed just gets the new spec; a placed one
// goes to Updating, and its host restarts it with the new spec in the same
// sandbox (id and IP kept). A change of shape is charged to the quota and
// metered from the moment of the change, in the same transaction
// (tenancy.Manager.UpdateGroup).
func (s *Service) UpdateGroup(ctx context.Context, c Caller, idOrName string, req *api.UpdateGroupRequest) (*api.Group, error) {
	g, err := s.resolve(ctx, c, idOrName)
	if err != nil {
		return nil, err
	}
	if g.Deleting {
		return nil, errdefs.Userf(errdefs.ErrIncorrectStat, "the group is being deleted")
	}
	for _, v := range req.Volumes {
		if v.HostPath != nil && !c.Admin {
			return nil, errdefs.Userf(errdefs.ErrForbidden, fmt.Sprintf("volume %q: hostPath volumes are for admin accounts only", v.Name))
		}
	}
	if err := s.checkHostRoom(ctx, g, req); err != nil {
		return nil, err
	}
	return s.updateGroup(ctx, c, g.ID, func(cur *api.Group) error {
		return applyGroupUpdate(cur, req)
	})
}

// UpdateGroupFields changes a group through fn, with UpdateGroup's checks:
// the ECI tag actions use it.
func (s *Service) UpdateGroupFields(ctx context.Context, c Caller, idOrName string, fn func(g *api.Group) error) (*api.Group, error) {
	g, err := s.resolve(ctx, c, idOrName)
	if err != nil {
		return nil, err
	}
	if g.Deleting {
		return nil, errdefs.Userf(errdefs.ErrIncorrectStat, "the group is being deleted")
	}
	return s.updateGroup(ctx, c, g.ID, func(cur *api.Group) error {
		before := cur.Spec
		if err := fn(cur); err != nil {
			return err
		}
		return settle(cur, before)
	})
}

func (s *Service) updateGroup(ctx context.Context, c Caller, id string, fn func(g *api.Group) error) (*api.Group, error) {
	guarded := func(cur *api.Group) error {
		if cur.AccountID != c.AccountID {
			return errdefs.Userf(errdefs.ErrNotFound, "container group not found")
		}
		if cur.Deleting {
			return errdefs.Userf(errdefs.ErrIncorrectStat, "the group is being deleted")
		}
		return fn(cur)
	}
	if s.ten != nil {
		return s.ten.UpdateGroup(ctx, id, guarded)
	}
	return s.store.UpdateGroup(ctx, id, guarded)
}

// applyGroupUpdate applies req to g's record.
func applyGroupUpdate(g *api.Group, req *api.UpdateGroupRequest) error {
	before := g.Spec
	s := g.Spec // the slices below are replaced, never edited in place
	if req.Containers != nil {
		s.Containers = mergeContainers(s.Containers, req.Containers, req.Incremental)
	}
	if req.InitContainers != nil {
		s.InitContainers = mergeContainers(s.InitContainers, req.InitContainers, req.Incremental)
	}
	if req.Volumes != nil {
		s.Volumes = req.Volumes
	}
	if req.CPU != nil {
		s.CPU = *req.CPU
	}
	if req.Memory != nil {
		s.Memory = *req.Memory
	}
	if req.DNSConfig != nil {
		s.DNSConfig = req.DNSConfig
	}
	if req.ImageRegistryCredentials != nil {
		s.ImageRegistryCredentials = req.ImageRegistryCredentials
	}
	if req.Tags != nil {
		s.Tags = req.Tags
	}
	if req.RestartPolicy != "" {
		s.RestartPolicy = req.RestartPolicy
	}
	if req.ActiveDeadlineSeconds != nil {
		s.ActiveDeadlineSeconds = req.ActiveDeadlineSeconds
	}
	if req.TerminationGracePeriodSeconds != nil {
		s.TerminationGracePeriodSeconds = req.TerminationGracePeriodSeconds
	}
	g.Spec = s
	return settle(g, before)
}

// settle validates g's new spec against before and decides what the
// change means for the group: nothing to do, a new spec for the scheduler,
// or a restart with the new spec on its host (status Updating).
func settle(g *api.Group, before api.GroupSpec) error {
	req := api.CreateGroupRequest{Name: g.Name, Labels: g.Labels, Spec: g.Spec}
	if err := req.Validate(); err != nil {
		return errdefs.Invalid(err.Error())
	}
	g.Spec = req.Spec
	if !RunsDifferently(&before, &g.Spec) {
		return nil
	}
	switch g.Status {
	case api.StatusPending, api.StatusScheduling, api.StatusScheduleFailed, api.StatusRunning:
	default:
		return errdefs.Userf(errdefs.ErrIncorrectStat, fmt.Sprintf("the group is %s: only a Pending or Running group's containers, volumes or resources can be updated", g.Status))
	}
	if g.HostID == "" {
		g.Containers, g.InitContainers = pendingStatuses(g.Spec.Containers), pendingStatuses(g.Spec.InitContainers)
		return nil // not placed yet: the scheduler places the new spec
	}
	g.SpecGeneration++
	g.Status, g.Reason, g.Message = api.StatusUpdating, "", ""
	return nil
}

func pendingStatuses(cs []api.Container) []api.ContainerStatus {
	var out []api.ContainerStatus
	for _, c := range cs {
		out = append(out, api.ContainerStatus{Name: c.Name, Image: c.Image, State: api.ContainerWaiting, Reason: "Pending"})
	}
	return out
}

// RunsDifferently says whether a group with spec b runs differently from
// one with spec a: anything but tags, restart policy, deadline and grace
// period, which the host applies without a restart.
func RunsDifferently(a, b *api.GroupSpec) bool {
	x, y := *a, *b
	for _, s := range []*api.GroupSpec{&x, &y} {
		s.Tags, s.RestartPolicy, s.ActiveDeadlineSeconds, s.TerminationGracePeriodSeconds = nil, "", nil, nil
	}
	return !reflect.DeepEqual(x, y)
}

// mergeContainers returns the container list an update gives: with
// incremental unset, upd itself; otherwise have with each container of upd
// merged by name (its non-empty fields win; env is set per variable) and
// new names appended.
func mergeContainers(have, upd []api.Container, incremental bool) []api.Container {
	if !incremental {
		return upd
	}
	out := append([]api.Container(nil), have...)
	for _, u := range upd {
		i := -1
		for k := range out {
			if out[k].Name == u.Name {
				i = k
			}
		}
		if i < 0 {
			out = append(out, u)
			continue
		}
		merged := out[i]
		env := mergeEnv(merged.Env, u.Env)
		dst, src := reflect.ValueOf(&merged).Elem(), reflect.ValueOf(u)
		for f := 0; f < src.NumField(); f++ {
			if !src.Field(f).IsZero() {
				dst.Field(f).Set(src.Field(f))
			}
		}
		merged.Env = env
		out[i] = merged
	}
	return out
}

func mergeEnv(have, set []api.EnvVar) []api.EnvVar {
	out := append([]api.EnvVar(nil), have...)
	for _, e := range set {
		found := false
		for k := range out {
			if out[k].Name == e.Name {
				out[k], found = e, true
			}
		}
		if !found {
			out = append(out, e)
		}
	}
	return out
}

// checkHostRoom refuses an update that grows a placed group beyond what
// its host has free. (The scheduler's next round sees the new size; a
// placement racing this update may still take the room first.)
func (s *Service) checkHostRoom(ctx context.Context, g *api.Group, req *api.UpdateGroupRequest) error {
	if g.HostID == "" {
		return nil
	}
	next := g.Spec
	if req.Containers != nil {
		next.Containers = mergeContainers(next.Containers, req.Containers, req.Incremental)
	}
	if req.InitContainers != nil {
		next.InitContainers = mergeContainers(next.InitContainers, req.InitContainers, req.Incremental)
	}
	if req.CPU != nil {
		next.CPU = *req.CPU
	}
	if req.Memory != nil {
		next.Memory = *req.Memory
	}
	was, will := g.Spec.Requests(), next.Requests()
	if will.MilliCPU <= was.MilliCPU && will.Memory <= was.Memory && will.GPU <= was.GPU {
		return nil
	}
	hosts, err := s.Hosts(ctx)
	if err != nil {
		return err
	}
	for _, h := range hosts {
		if h.ID != g.HostID {
			continue
		}
		free := func(capacity, alloc int64) int64 { return capacity - alloc }
		if will.MilliCPU-was.MilliCPU > free(h.Capacity.MilliCPU, h.Allocated.MilliCPU) ||
			will.Memory-was.Memory > free(h.Capacity.Memory, h.Allocated.Memory) ||
			will.GPU-was.GPU > h.Capacity.GPU-h.Allocated.GPU {
			return errdefs.Userf(errdefs.ErrUnavailable, fmt.Sprintf("host %s has no room to grow group %s to %s vCPU and %v memory; delete and create it again to place it elsewhere",
				h.Name, g.Name, api.CPU(will.MilliCPU), api.Quantity(will.Memory)))
		}
	}
	return nil
}

// updateGroup serves PATCH /v1/groups/{id}.
func (a *apiHandler) updateGroup(w http.ResponseWriter, r *http.Request) error {
	var req api.UpdateGroupRequest
	if err := decodeStrict(r.Body, &req); err != nil {
		return errdefs.Invalid("bad update: " + err.Error())
	}
	g, err := a.svc.UpdateGroup(r.Context(), callerFrom(r.Context()), r.PathValue("id"), &req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, g)
	return nil
}
