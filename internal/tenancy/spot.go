package tenancy

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// HostView is what the reclaim planner needs to know of a host.
type HostView struct {
	ID        string
	Ready     bool
	Zone      string
	Labels    map[string]string
	Capacity  api.Resources
	Allocated api.Resources
}

// Need is an on-demand group the scheduler could not place.
type Need struct {
	GroupID      string
	MilliCPU     int64
	Memory       int64
	Zone         string
	NodeSelector map[string]string
}

type victim struct {
	id     string
	res    api.Resources
	since  time.Time
	marked bool
}

// PlanReclaim picks the spot groups to reclaim so that the needs fit: for
// each need in order, the host where it fits after evicting the fewest
// spot groups (youngest first: they lose the least work). Groups already
// marked for reclaim count as gone, so nothing is evicted twice over, and
// each need's share is then taken off the host so that two needs do not
// both count on the same freed capacity. It is pure: the caller marks.
func PlanReclaim(hosts []HostView, groups []*api.Group, needs []Need) []string {
	type hostState struct {
		h       HostView
		free    api.Resources
		victims []*victim
	}
	byID := map[string]*hostState{}
	var order []*hostState
	for _, h := range hosts {
		hs := &hostState{h: h, free: api.Resources{
			MilliCPU: h.Capacity.MilliCPU - h.Allocated.MilliCPU,
			Memory:   h.Capacity.Memory - h.Allocated.Memory,
			Groups:   h.Capacity.Groups - h.Allocated.Groups,
		}}
		byID[h.ID] = hs
		order = append(order, hs)
	}
	for _, g := range groups {
		hs := byID[g.HostID]
		if hs == nil || g.Status.Terminal() || g.Deleting || !api.IsSpot(g.Spec.SpotStrategy) {
			continue
		}
		r := g.Spec.Requests()
		v := &victim{id: g.ID, res: r, since: g.CreatedAt, marked: g.SpotReclaimAt != nil}
		if g.ScheduledAt != nil {
			v.since = *g.ScheduledAt
		}
		if v.marked {
			hs.free.MilliCPU += r.MilliCPU
			hs.free.Memory += r.Memory
			hs.free.Groups++
			continue
		}
		hs.victims = append(hs.victims, v)
	}
	for _, hs := range order {
		sort.Slice(hs.victims, func(i, j int) bool { return hs.victims[i].since.After(hs.victims[j].since) })
	}
	fits := func(f api.Resources, n Need, groupsLimited bool) bool {
		return f.MilliCPU >= n.MilliCPU && f.Memory >= n.Memory && (!groupsLimited || f.Groups >= 1)
	}
	var out []string
	for _, n := range needs {
		var best *hostState
		bestK := -1
		for _, hs := range order {
			if !hs.h.Ready || (n.Zone != "" && hs.h.Zone != n.Zone) || !labelsHave(hs.h.Labels, n.NodeSelector) {
				continue
			}
			limited := hs.h.Capacity.Groups > 0
			f := hs.free
			k := 0
			for !fits(f, n, limited) && k < len(hs.victims) {
				v := hs.victims[k]
				f.MilliCPU += v.res.MilliCPU
				f.Memory += v.res.Memory
				f.Groups++
				k++
			}
			if !fits(f, n, limited) {
				continue
			}
			if best == nil || k < bestK {
				best, bestK = hs, k
			}
		}
		if best == nil {
			continue
		}
		for _, v := range best.victims[:bestK] {
			best.free.MilliCPU += v.res.MilliCPU
			best.free.Memory += v.res.Memory
			best.free.Groups++
			out = append(out, v.id)
		}
		best.victims = best.victims[bestK:]
		best.free.MilliCPU -= n.MilliCPU
		best.free.Memory -= n.Memory
		best.free.Groups--
	}
	return out
}

func labelsHave(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// SpotRound carries the reclaim forward, on the leader, once per
// scheduling round: it marks the victims PlanReclaim picks (with a
// SpotToBeReleased warning event, ReclaimNotice ahead), stops the marked
// groups whose notice is over, and gives stopped ones their final status:
// Expired, reason SpotReclaimed. guards make every write conditional on
// leadership.
//
// Stopping reuses the host's own deadline enforcement: the group's active
// deadline is set to the time it has run, so its agent stops it with the
// usual grace period, and the record stays for the user to see.
func (m *Manager) SpotRound(ctx context.Context, groups []*api.Group, hosts []HostView, needs []Need, guards ...clientv3.Cmp) error {
	now := m.now().UTC()
	var events []api.Event
	for _, id := range PlanReclaim(hosts, groups, needs) {
		at := now.Add(m.notice)
		_, err := m.store.UpdateGroup(ctx, id, func(g *api.Group) error {
			if g.SpotReclaimAt != nil || g.Status.Terminal() || g.Deleting {
				return store.ErrNoChange
			}
			g.SpotReclaimAt = &at
			events = append(events, api.Event{GroupID: g.ID, Type: "Warning", Reason: api.EventSpotToBeReleased, HostID: g.HostID, Time: now,
				Message: fmt.Sprintf("spot instance will be released at %s (in %s): its capacity is needed for on-demand work", at.Format(time.RFC3339), m.notice)})
			return nil
		}, guards...)
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return err
		}
	}
	for _, g := range groups {
		if g.SpotReclaimAt == nil || g.Deleting {
			continue
		}
		switch {
		case g.Status == api.StatusExpired:
		case g.Status.Terminal() && !allStopped(g):
			// The host is still reporting the stop; rewriting now would
			// be overwritten by its last reports.
		case g.Status.Terminal():
			// Stopped by the reclaim (or ended by itself meanwhile): final status.
			_, err := m.store.UpdateGroup(ctx, g.ID, func(g *api.Group) error {
				if !g.Status.Terminal() || g.Status == api.StatusExpired {
					return store.ErrNoChange
				}
				g.Status = api.StatusExpired
				g.Reason = api.ReasonSpotGone
				g.Message = "the spot instance was reclaimed for on-demand capacity"
				return nil
			}, guards...)
			if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
				return err
			}
			events = append(events, api.Event{GroupID: g.ID, Type: "Warning", Reason: api.ReasonSpotGone, HostID: g.HostID, Time: now,
				Message: "spot instance released: status Expired"})
		case !now.Before(*g.SpotReclaimAt):
			_, err := m.store.UpdateGroup(ctx, g.ID, func(g *api.Group) error {
				if g.Status.Terminal() || g.Deleting {
					return store.ErrNoChange
				}
				if g.StartedAt == nil {
					// Never started: nothing to stop gracefully.
					g.Status = api.StatusExpired
					g.Reason = api.ReasonSpotGone
					g.Message = "the spot instance was reclaimed for on-demand capacity before it started"
					g.Deleting = true
					return nil
				}
				ran := int64(now.Sub(*g.StartedAt)/time.Second) + 1
				if d := g.Spec.ActiveDeadlineSeconds; d != nil && *d <= ran {
					return store.ErrNoChange
				}
				g.Spec.ActiveDeadlineSeconds = &ran
				return nil
			}, guards...)
			if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
				return err
			}
		}
	}
	if len(events) > 0 {
		return m.store.AppendEvents(ctx, events...)
	}
	return nil
}

// allStopped reports whether the host has reported every container ended.
func allStopped(g *api.Group) bool {
	for _, c := range append(append([]api.ContainerStatus{}, g.InitContainers...), g.Containers...) {
		if c.State == api.ContainerRunning {
			return false
		}
	}
	return true
}
