package agent

import (
	"context"
	"reflect"
	"time"

	"github.com/skiffhq/skiff/api"
)

// A spec update (api.Group.SpecGeneration) is applied by restarting the
// group with the new spec: every container stops within its grace period,
// the container list is rebuilt from the new spec (restart counts kept by
// name), images are resolved or pulled again, and the group starts over
// from its init containers. The sandbox — and so the group's IP — stays
// when the new spec needs the same one; a change to what the sandbox
// itself holds (volumes, group limits, DNS, published ports, hostname)
// rebuilds it, and the group may get a new IP then. Until its containers
// run again the group reports Updating.

// initialSpecGen is the spec generation a new runner starts at: a fresh
// group is built from its current spec; a re-adopted sandbox runs the
// spec its host last reported, and a newer one is applied on the first
// step.
func initialSpecGen(g *api.Group, adopted bool) int64 {
	if adopted {
		return g.AppliedSpecGeneration
	}
	return g.SpecGeneration
}

// setRecord takes a newer record from the server, keeping the spec the
// runner runs when the record carries an update it has not applied yet.
func (r *runner) setRecord(g *api.Group) {
	if g.SpecGeneration > r.specGen && r.oldSpec == nil {
		old := r.g.Spec
		r.oldSpec = &old
	}
	r.g = g
}

// applySpec restarts the group with the spec of the current record.
func (r *runner) applySpec(ctx context.Context) {
	r.specGen = r.g.SpecGeneration
	r.updating = true
	r.event("Normal", "Updating", "", "restarting with the updated spec")
	r.stopAll(ctx, r.grace())
	if r.created && r.sandboxChanged() {
		r.event("Normal", "Updating", "", "rebuilding the sandbox: its volumes, limits, DNS or ports changed")
		if err := r.a.rt.RemoveSandbox(ctx, r.id); err != nil {
			r.log.Warn("remove sandbox for update", "err", err)
		}
		r.created = false
	}
	r.oldSpec = nil
	known := map[string]api.ContainerStatus{}
	for _, c := range append(append([]*ctr{}, r.inits...), r.ctrs...) {
		st := c.st
		if c.everRan {
			last := c.st
			last.LastState = nil
			st.LastState = &last
			st.RestartCount++
		}
		known[c.spec.Name] = st
	}
	mk := func(spec api.Container, init bool) *ctr {
		c := &ctr{spec: spec, init: init, st: api.ContainerStatus{Name: spec.Name, Image: spec.Image, State: api.ContainerWaiting, Reason: "ContainerCreating"}}
		if prev, ok := known[spec.Name]; ok {
			c.st.RestartCount, c.st.LastState = prev.RestartCount, prev.LastState
		}
		return c
	}
	r.inits, r.ctrs = nil, nil
	for _, s := range r.g.Spec.InitContainers {
		r.inits = append(r.inits, mk(s, true))
	}
	for _, s := range r.g.Spec.Containers {
		r.ctrs = append(r.ctrs, mk(s, false))
	}
	r.initDone = len(r.inits) == 0
	r.failReason, r.failMsg = "", ""
	// The sandbox is kept (CreateSandbox of an existing id returns it) or
	// built again; create also pulls the new images.
	r.created = false
	r.finishedAt = nil
	now := time.Now().UTC()
	r.startedAt = &now
}

// sandboxChanged says whether the spec being replaced needs a different
// sandbox from the new one. Not knowing the old spec (an update that
// arrived while the agent was down) counts as changed.
func (r *runner) sandboxChanged() bool {
	if r.oldSpec == nil {
		return true
	}
	cur := r.g
	old := *cur
	old.Spec = *r.oldSpec
	r.g = &old
	a := r.sandboxConfig()
	r.g = cur
	b := r.sandboxConfig()
	return !reflect.DeepEqual(a, b)
}

// specStatus is the status to report while an update is under way: the
// group stays Updating until its containers run again (or it ends).
func (r *runner) specStatus(st api.Status, reason, msg string) (api.Status, string, string) {
	if r.g.SpecGeneration > r.specGen {
		return api.StatusUpdating, "", ""
	}
	if !r.updating {
		return st, reason, msg
	}
	if st == api.StatusRunning || st.Terminal() || r.failReason != "" {
		r.updating = false
		return st, reason, msg
	}
	if reason == "" || reason == "ContainerCreating" || reason == "PodInitializing" {
		return api.StatusUpdating, "", ""
	}
	return api.StatusUpdating, reason, msg // a pull failing, say
}
