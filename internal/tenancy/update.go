package tenancy

import (
	"context"
	"fmt"
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/store"
)

// UpdateGroup applies fn to a group's record in one transaction with what
// the change does to the account: when the group's shape (vCPU, memory,
// spot) changes, its charge moves — an increase is admitted against the
// quota like a create, and refused with ErrQuota, changing nothing — and,
// if the group is being billed, its billing interval is closed at the
// change (a whole second) and a new one at the new rate starts there
// (Group.MeterFrom). Without a change of shape it is a plain update.
func (m *Manager) UpdateGroup(ctx context.Context, id string, fn func(g *api.Group) error) (*api.Group, error) {
	var acct string
	var q api.Quota
	haveQuota := false
	return m.store.UpdateGroupCharged(ctx, id, func(g *api.Group) (*store.ChargeChange, error) {
		now := m.now().UTC().Truncate(time.Second)
		before := *g
		before.Spec = *cloneSpec(&g.Spec)
		if err := fn(g); err != nil {
			return nil, err
		}
		old, next := chargeOf(&before.Spec), chargeOf(&g.Spec)
		if old == next && api.IsSpot(before.Spec.SpotStrategy) == api.IsSpot(g.Spec.SpotStrategy) {
			return nil, nil
		}
		if !haveQuota || acct != g.AccountID {
			var err error
			if q, err = m.store.GetQuota(ctx, g.AccountID); err != nil {
				return nil, err
			}
			acct, haveQuota = g.AccountID, true
		}
		ch := &store.ChargeChange{Entry: next}
		if start, end, ok := interval(&before, nil); ok && end == nil && now.After(start) {
			ch.Close = entryFor(&before, start, now)
			g.MeterFrom = &now
		}
		return ch, nil
	}, func(u store.Usage, old, next store.UsageEntry) error {
		return checkGrowth(acct, q, u, old, next)
	})
}

// checkGrowth admits a group's charge moving from old to next: only what
// grows is checked, so an account over a lowered quota may still shrink.
func checkGrowth(acct string, q api.Quota, u store.Usage, old, next store.UsageEntry) error {
	if next.MilliCPU > old.MilliCPU && q.MilliCPU > 0 && u.MilliCPU-old.MilliCPU+next.MilliCPU > q.MilliCPU {
		return errdefs.Userf(errdefs.ErrQuota, fmt.Sprintf("account %s holds %s vCPU; growing this group to %s vCPU would exceed its quota of %s vCPU",
			acct, api.CPU(u.MilliCPU), api.CPU(next.MilliCPU), api.CPU(q.MilliCPU)))
	}
	if next.Memory > old.Memory && q.Memory > 0 && u.Memory-old.Memory+next.Memory > q.Memory {
		return errdefs.Userf(errdefs.ErrQuota, fmt.Sprintf("account %s holds %v memory; growing this group to %v would exceed its quota of %v",
			acct, api.Quantity(u.Memory), api.Quantity(next.Memory), api.Quantity(q.Memory)))
	}
	return nil
}

// cloneSpec copies the parts of a spec that requests and metering read
// and an update may replace (the slices are replaced, never edited).
func cloneSpec(s *api.GroupSpec) *api.GroupSpec {
	c := *s
	c.Containers = append([]api.Container(nil), s.Containers...)
	c.InitContainers = append([]api.Container(nil), s.InitContainers...)
	return &c
}
