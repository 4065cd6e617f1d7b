package tenancy

import (
	"context"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/store"
)

// CreateGroups is CreateGroup for many groups of one account, charged in
// batched transactions (store.CreateGroupsCharged).
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
		es[i] = chargeOf(&g.Spec)
	}
	bout, berrs := m.store.CreateGroupsCharged(ctx, same, es, admitter(acct, q))
	for k, i := range idx {
		out[i], errs[i] = bout[k], berrs[k]
	}
	return out, errs
}
