package tenancy

import (
	"context"
	"errors"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/store"
)

// CreateGroups is CreateGroup for many groups of one account, charged in
// batched transactions (store.CreateGroupsCharged). A group refused for
// quota is tried once more alone, after pruning, as CreateGroup does.
func (m *Manager) CreateGroups(ctx context.Context, gs []*api.Group) ([]*api.Group, []error) {
	if len(gs) == 0 {
		return nil, nil
	}
	q, err := m.store.GetQuota(ctx, gs[0].AccountID)
	if err != nil {
		errs := make([]error, len(gs))
		for i := range errs {
			errs[i] = err
		}
		return make([]*api.Group, len(gs)), errs
	}
	acct := gs[0].AccountID
	out := make([]*api.Group, len(gs))
	errs := make([]error, len(gs))
	var same []*api.Group
	var idx []int
	for i, g := range gs {
		if g.AccountID != acct { // not what the API sends; kept correct anyway
			out[i], errs[i] = m.CreateGroup(ctx, g)
			continue
		}
		same = append(same, g)
		idx = append(idx, i)
	}
	es := make([]store.UsageEntry, len(same))
	for i, g := range same {
		r := g.Spec.Requests()
		es[i] = store.UsageEntry{MilliCPU: r.MilliCPU, Memory: r.Memory}
	}
	// admit sees one record per transaction attempt, growing by the
	// entries it admits: sum it once per record, not once per group.
	var cur *store.UsageRecord
	var cpu, mem int64
	var n int
	admit := func(u *store.UsageRecord, e store.UsageEntry) error {
		if u != cur {
			cur = u
			cpu, mem, n = u.Totals()
		}
		if err := checkTotals(acct, q, cpu, mem, n, e); err != nil {
			return err
		}
		cpu, mem, n = cpu+e.MilliCPU, mem+e.Memory, n+1
		return nil
	}
	bout, berrs := m.store.CreateGroupsCharged(ctx, same, es, admit)
	for k, i := range idx {
		out[i], errs[i] = bout[k], berrs[k]
		if errors.Is(errs[i], errdefs.ErrQuota) {
			out[i], errs[i] = m.CreateGroup(ctx, gs[i])
		}
	}
	return out, errs
}
