package server

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/store"
	"github.com/skiffhq/skiff/internal/tenancy"
)

// Service is the one service layer under every API front (native REST and
// the ECI-compatible RPC). Every call is on behalf of an account; a caller
// never sees or touches another account's groups.
type Service struct {
	store *store.Store
	hub   *Hub
	kick  func() // wakes the scheduler
	// ten charges groups to their account's quota and meters them; nil
	// (in tests that build a bare Service) skips both.
	ten *tenancy.Manager
	// history counts creates for the warm-pool forecast (pool.go; nil: off).
	history *historyRecorder
	// place pre-places new groups on the leader (preplace.go) and says how
	// many it placed; nil: every group waits for a scheduling round.
	place func(ctx context.Context, gs []*api.Group) int
}

// Caller is who makes a request.
type Caller struct {
	AccountID string
	Admin     bool
}

func newID(prefix string) string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return prefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// CreateGroup validates and records a new group; it is Pending until the
// scheduler places it. With a client token seen before, it returns the
// group the first call made and created=false.
func (s *Service) CreateGroup(ctx context.Context, c Caller, req *api.CreateGroupRequest) (g *api.Group, created bool, err error) {
	g, cacheEv, err := s.prepareGroup(ctx, c, req)
	if err != nil {
		return nil, false, err
	}
	var out *api.Group
	if s.ten != nil {
		out, err = s.ten.CreateGroup(ctx, g) // quota-checked, atomically
	} else {
		out, err = s.store.CreateGroup(ctx, g)
	}
	return s.created(ctx, out, cacheEv, err)
}

// created finishes a create whose store write returned out, err.
func (s *Service) created(ctx context.Context, out *api.Group, cacheEv *api.Event, err error) (*api.Group, bool, error) {
	if errors.Is(err, store.ErrTokenUsed) {
		return out, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if cacheEv != nil {
		go func() { _ = s.store.AppendEvents(context.WithoutCancel(ctx), *cacheEv) }() // off the create path
	}
	s.history.note(out) // in memory; flushed to the store in the background
	if s.kick != nil {
		s.dispatch(ctx, s.kick, out)
	}
	return out, true, nil
}

// dispatch hands newly stored groups to pre-placement, off the create
// path, and wakes the scheduler for whatever it did not place.
func (s *Service) dispatch(ctx context.Context, kick func(), gs ...*api.Group) {
	if len(gs) == 0 {
		return
	}
	if s.place == nil {
		kick()
		return
	}
	go func() {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if s.place(pctx, gs) < len(gs) {
			kick()
		}
	}()
}

// prepareGroup validates a create request and builds the group record, not
// yet stored, with the image-cache event to record once it is.
func (s *Service) prepareGroup(ctx context.Context, c Caller, req *api.CreateGroupRequest) (*api.Group, *api.Event, error) {
	if err := req.Validate(); err != nil {
		return nil, nil, errdefs.Invalid(err.Error())
	}
	if s.ten != nil {
		if err := s.ten.CheckSpot(&req.Spec); err != nil {
			return nil, nil, err
		}
	}
	for _, v := range req.Spec.Volumes {
		if v.HostPath != nil && !c.Admin {
			return nil, nil, errdefs.Userf(errdefs.ErrForbidden, fmt.Sprintf("volume %q: hostPath volumes are for admin accounts only", v.Name))
		}
	}
	now := time.Now().UTC()
	g := &api.Group{
		ID:          newID("g-"),
		Name:        req.Name,
		AccountID:   c.AccountID,
		Labels:      req.Labels,
		ClientToken: req.ClientToken,
		Spec:        req.Spec,
		Status:      api.StatusPending,
		CreatedAt:   now,
		UpdatedAt:   now,
	}
	if g.Name == "" {
		g.Name = g.ID
	}
	for _, ct := range g.Spec.Containers {
		g.Containers = append(g.Containers, api.ContainerStatus{Name: ct.Name, Image: ct.Image, State: api.ContainerWaiting, Reason: "Pending"})
	}
	for _, ct := range g.Spec.InitContainers {
		g.InitContainers = append(g.InitContainers, api.ContainerStatus{Name: ct.Name, Image: ct.Image, State: api.ContainerWaiting, Reason: "Pending"})
	}
	cacheEv, err := s.matchImageCache(ctx, c, g) // registry fields, image cache (imagecache.go)
	if err != nil {
		return nil, nil, err
	}
	return g, cacheEv, nil
}

// resolve finds a group by id or name within the caller's account.
func (s *Service) resolve(ctx context.Context, c Caller, idOrName string) (*api.Group, error) {
	if idOrName == "" || len(idOrName) > 253 {
		return nil, errdefs.Invalid("a group id or name is required")
	}
	g, err := s.store.GetGroup(ctx, idOrName)
	if err == nil && g.AccountID == c.AccountID {
		return g, nil
	}
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return nil, err
	}
	id, err := s.store.GroupIDByName(ctx, c.AccountID, idOrName)
	if err != nil {
		return nil, errdefs.Userf(errdefs.ErrNotFound, fmt.Sprintf("container group %q not found", idOrName))
	}
	g, err = s.store.GetGroup(ctx, id)
	if err != nil || g.AccountID != c.AccountID {
		return nil, errdefs.Userf(errdefs.ErrNotFound, fmt.Sprintf("container group %q not found", idOrName))
	}
	return g, nil
}

// GetGroup returns one group by id or name.
func (s *Service) GetGroup(ctx context.Context, c Caller, idOrName string) (*api.Group, error) {
	return s.resolve(ctx, c, idOrName)
}

// ListOptions filters and pages a group list.
type ListOptions struct {
	Name      string
	Labels    map[string]string
	Statuses  []api.Status
	IDs       []string
	Limit     int
	NextToken string
}

// ListGroups returns the caller's groups, oldest first, filtered and paged.
// The next token is the id of the last group returned.
func (s *Service) ListGroups(ctx context.Context, c Caller, o ListOptions) (api.List[*api.Group], error) {
	if o.Limit <= 0 {
		o.Limit = 100
	}
	if o.Limit > 1000 {
		return api.List[*api.Group]{}, errdefs.Invalid("limit must be at most 1000")
	}
	all, _, err := s.store.ListGroups(ctx)
	if err != nil {
		return api.List[*api.Group]{}, err
	}
	ids := map[string]bool{}
	for _, id := range o.IDs {
		ids[id] = true
	}
	var match []*api.Group
	for _, g := range all {
		if g.AccountID != c.AccountID {
			continue
		}
		if o.Name != "" && g.Name != o.Name {
			continue
		}
		if len(ids) > 0 && !ids[g.ID] {
			continue
		}
		if len(o.Statuses) > 0 && !containsStatus(o.Statuses, g.Status) {
			continue
		}
		if !labelsMatch(g, o.Labels) {
			continue
		}
		match = append(match, g)
	}
	sort.Slice(match, func(i, j int) bool {
		if !match[i].CreatedAt.Equal(match[j].CreatedAt) {
			return match[i].CreatedAt.Before(match[j].CreatedAt)
		}
		return match[i].ID < match[j].ID
	})
	start := 0
	if o.NextToken != "" {
		start = -1
		for i, g := range match {
			if g.ID == o.NextToken {
				start = i + 1
				break
			}
		}
		if start < 0 {
			return api.List[*api.Group]{}, errdefs.Invalid("nextToken is not valid (the group it points at is gone); list again from the start")
		}
	}
	end := min(start+o.Limit, len(match))
	page := api.List[*api.Group]{Items: match[start:end], Total: len(match)}
	if page.Items == nil {
		page.Items = []*api.Group{}
	}
	if end < len(match) {
		page.NextToken = match[end-1].ID
	}
	return page, nil
}

func containsStatus(list []api.Status, s api.Status) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func labelsMatch(g *api.Group, want map[string]string) bool {
	for k, v := range want {
		have, ok := g.Labels[k]
		if !ok {
			have, ok = g.Spec.Tags[k]
		}
		if !ok || (v != "" && have != v) {
			return false
		}
	}
	return true
}

// DeleteGroup starts a group's teardown. A group not on any host, or on a
// host that is gone and force is set, is removed at once.
func (s *Service) DeleteGroup(ctx context.Context, c Caller, idOrName string, force bool) (*api.Group, error) {
	return s.DeleteGroupGrace(ctx, c, idOrName, force, nil)
}

// DeleteGroupGrace is DeleteGroup with the grace period of this delete
// (Kubernetes' gracePeriodSeconds): it replaces the spec's, and a second
// delete may shorten it. nil keeps the spec's; 0 is force.
func (s *Service) DeleteGroupGrace(ctx context.Context, c Caller, idOrName string, force bool, grace *int64) (*api.Group, error) {
	if grace != nil && (*grace < 0 || *grace > api.MaxGracePeriod) {
		return nil, errdefs.Invalid(fmt.Sprintf("gracePeriodSeconds %d: must be between 0 and %d", *grace, api.MaxGracePeriod))
	}
	if grace != nil && *grace == 0 {
		force = true
	}
	for attempt := 0; ; attempt++ {
		g, err := s.deleteGroup(ctx, c, idOrName, force, grace)
		if errors.Is(err, store.ErrConflict) && attempt < 10 {
			continue // placed or changed under us: decide again on the new record
		}
		return g, err
	}
}

func (s *Service) deleteGroup(ctx context.Context, c Caller, idOrName string, force bool, grace *int64) (*api.Group, error) {
	g, err := s.resolve(ctx, c, idOrName)
	if err != nil {
		return nil, err
	}
	if s.ten != nil && !g.Deleting {
		// Billing stops when the delete is asked for.
		if err := s.ten.CloseDeleted(ctx, g); err != nil {
			return nil, err
		}
	}
	hostGone := g.HostID != "" && force && !s.hub.Connected(g.HostID)
	if g.HostID == "" || hostGone {
		if err := s.store.DeleteGroup(ctx, g); err != nil {
			return nil, err
		}
		g.Status = api.StatusTerminating
		g.Deleting = true
		return g, nil
	}
	return s.store.UpdateGroup(ctx, g.ID, func(g *api.Group) error {
		// A first delete sets the grace period; a later one may only
		// shorten it, as in Kubernetes.
		cur := g.Spec.TerminationGracePeriodSeconds
		shorter := grace != nil && (cur == nil || *grace < *cur)
		if g.Deleting && !force && !shorter {
			return store.ErrNoChange
		}
		if force {
			zero := int64(0)
			g.Spec.TerminationGracePeriodSeconds = &zero
		} else if grace != nil && (shorter || !g.Deleting) {
			g.Spec.TerminationGracePeriodSeconds = grace
		}
		g.Deleting = true
		if !g.Status.Terminal() {
			g.Status = api.StatusTerminating
		}
		return nil
	})
}

// RestartGroup asks the group's host to restart all its containers.
func (s *Service) RestartGroup(ctx context.Context, c Caller, idOrName string) (*api.Group, error) {
	g, err := s.resolve(ctx, c, idOrName)
	if err != nil {
		return nil, err
	}
	if g.Deleting {
		return nil, errdefs.Userf(errdefs.ErrIncorrectStat, "the group is being deleted")
	}
	if g.HostID == "" {
		return nil, errdefs.Userf(errdefs.ErrIncorrectStat, fmt.Sprintf("the group is %s and not on a host yet; restart applies to placed groups", g.Status))
	}
	return s.store.UpdateGroup(ctx, g.ID, func(g *api.Group) error {
		g.RestartGeneration++
		if g.Status == api.StatusRunning || g.Status.Terminal() {
			g.Status = api.StatusRestarting
		}
		return nil
	})
}

// Events returns a group's events.
func (s *Service) Events(ctx context.Context, c Caller, idOrName string) ([]api.Event, error) {
	g, err := s.resolve(ctx, c, idOrName)
	if err != nil {
		return nil, err
	}
	return s.store.ListEvents(ctx, g.ID)
}

// Wait blocks until the group reaches one of statuses or the timeout.
func (s *Service) Wait(ctx context.Context, c Caller, idOrName string, statuses []api.Status, timeout time.Duration) (*api.Group, error) {
	g, err := s.resolve(ctx, c, idOrName)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	reached := func(g *api.Group) bool { return containsStatus(statuses, g.Status) }
	if reached(g) {
		return g, nil
	}
	ch := s.store.WatchGroups(ctx, g.Revision)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				if ctx.Err() != nil {
					return g, errdefs.Userf(errdefs.ErrTimeout, fmt.Sprintf("group %s is %s after %s, not %s", g.Name, g.Status, timeout, joinStatuses(statuses)))
				}
				// The watch broke: re-read and watch again.
				if g, err = s.store.GetGroup(ctx, g.ID); err != nil {
					return nil, err
				}
				if reached(g) {
					return g, nil
				}
				ch = s.store.WatchGroups(ctx, g.Revision)
				continue
			}
			if ev.Group.ID != g.ID {
				continue
			}
			if ev.Type == "DELETED" {
				return nil, errdefs.Userf(errdefs.ErrNotFound, fmt.Sprintf("group %s was deleted while waiting", g.Name))
			}
			g = ev.Group
			if reached(g) {
				return g, nil
			}
		case <-ctx.Done():
			return g, errdefs.Userf(errdefs.ErrTimeout, fmt.Sprintf("group %s is %s after %s, not %s", g.Name, g.Status, timeout, joinStatuses(statuses)))
		}
	}
}

func joinStatuses(ss []api.Status) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = string(s)
	}
	return strings.Join(parts, " or ")
}

// ParseStatuses parses a comma-separated status list.
func ParseStatuses(s string) ([]api.Status, error) {
	if s == "" {
		return nil, nil
	}
	var out []api.Status
	for _, p := range strings.Split(s, ",") {
		st := api.Status(strings.TrimSpace(p))
		if !st.Valid() {
			return nil, errdefs.Invalid(fmt.Sprintf("unknown status %q", p))
		}
		out = append(out, st)
	}
	return out, nil
}

// parseBool parses an optional query flag.
func parseBool(s string) (bool, error) {
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, errdefs.Invalid(fmt.Sprintf("%q is not a boolean", s))
	}
	return b, nil
}

// CreateGroups creates many groups of one caller: each is validated and
// prepared on its own, then the valid ones are stored in batched
// transactions (one disk sync per chunk, not per group) and the scheduler
// is woken once. out[i] and errs[i] are request i's group and error;
// created[i] is false where a client token matched an earlier create.
func (s *Service) CreateGroups(ctx context.Context, c Caller, reqs []*api.CreateGroupRequest) (out []*api.Group, created []bool, errs []error) {
	out = make([]*api.Group, len(reqs))
	created = make([]bool, len(reqs))
	errs = make([]error, len(reqs))
	kick := s.kick
	one := *s
	one.kick = nil
	var gs []*api.Group
	var evs []*api.Event
	var idx []int
	for i, req := range reqs {
		g, ev, err := s.prepareGroup(ctx, c, req)
		if err != nil {
			errs[i] = err
			continue
		}
		if s.ten == nil { // bare service (tests): no batched path
			st, err := s.store.CreateGroup(ctx, g)
			out[i], created[i], errs[i] = one.created(ctx, st, ev, err)
			continue
		}
		gs, evs, idx = append(gs, g), append(evs, ev), append(idx, i)
	}
	if len(gs) > 0 {
		stored, serrs := s.ten.CreateGroups(ctx, gs)
		for k, i := range idx {
			out[i], created[i], errs[i] = one.created(ctx, stored[k], evs[k], serrs[k])
		}
	}
	if kick != nil {
		var fresh []*api.Group
		for i := range reqs {
			if created[i] {
				fresh = append(fresh, out[i])
			}
		}
		s.dispatch(ctx, kick, fresh...)
	}
	return out, created, errs
}
