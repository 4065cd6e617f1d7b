package tenancy

import (
	"context"
	"fmt"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/errdefs"
	"github.com/skiffhq/skiff/internal/store"
)

// ErrTokenUsed is store.ErrTokenUsed: the create's client token was seen.
var ErrTokenUsed = store.ErrTokenUsed

// CreateGroup writes a new group charged to its account, refusing it with
// ErrQuota when it would take the account over its quota. The charge and
// the group are one etcd transaction, serialized per account on the
// account's usage counters, so concurrent creates never over-admit.
func (m *Manager) CreateGroup(ctx context.Context, g *api.Group) (*api.Group, error) {
	q, err := m.store.GetQuota(ctx, g.AccountID)
	if err != nil {
		return nil, err
	}
	return m.store.CreateGroupCharged(ctx, g, chargeOf(&g.Spec), admitter(g.AccountID, q))
}

// chargeOf is what a group with spec s takes from its account's quota.
func chargeOf(s *api.GroupSpec) store.UsageEntry {
	r := s.Requests()
	return store.UsageEntry{MilliCPU: r.MilliCPU, Memory: r.Memory}
}

// admitter checks one more group of charge e against an account's usage.
func admitter(acct string, q api.Quota) func(u store.Usage, e store.UsageEntry) error {
	return func(u store.Usage, e store.UsageEntry) error {
		return checkTotals(acct, q, u.MilliCPU, u.Memory, u.Groups, e)
	}
}

// checkTotals checks one more group of charge e against an account's summed
// usage and its quota.
func checkTotals(acct string, q api.Quota, cpu, mem int64, n int, e store.UsageEntry) error {
	switch {
	case q.Groups > 0 && n+1 > q.Groups:
		return errdefs.Userf(errdefs.ErrQuota, fmt.Sprintf("account %s holds %d container groups, its quota is %d", acct, n, q.Groups))
	case q.MilliCPU > 0 && cpu+e.MilliCPU > q.MilliCPU:
		return errdefs.Userf(errdefs.ErrQuota, fmt.Sprintf("account %s holds %s vCPU and asks %s more, its quota is %s vCPU",
			acct, api.CPU(cpu), api.CPU(e.MilliCPU), api.CPU(q.MilliCPU)))
	case q.Memory > 0 && mem+e.Memory > q.Memory:
		return errdefs.Userf(errdefs.ErrQuota, fmt.Sprintf("account %s holds %v memory and asks %v more, its quota is %v",
			acct, api.Quantity(mem), api.Quantity(e.Memory), api.Quantity(q.Memory)))
	}
	return nil
}

// Usage returns what an account holds now against its quota.
func (m *Manager) Usage(ctx context.Context, accountID string) (*api.AccountUsage, error) {
	q, err := m.store.GetQuota(ctx, accountID)
	if err != nil {
		return nil, err
	}
	u, err := m.store.GetUsage(ctx, accountID)
	if err != nil {
		return nil, err
	}
	return &api.AccountUsage{AccountID: accountID, Quota: q, MilliCPU: u.MilliCPU, Memory: u.Memory, Groups: u.Groups}, nil
}

// CheckSpot validates a spec's spot fields against the price table: a
// SpotWithPriceLimit group whose limit is below the spot price cannot run.
func (m *Manager) CheckSpot(s *api.GroupSpec) error {
	switch s.SpotStrategy {
	case "", api.SpotNone:
		if s.SpotPriceLimit != 0 {
			return errdefs.Invalid("spotPriceLimit is only valid with spotStrategy SpotWithPriceLimit")
		}
		return nil
	case api.SpotAsPriceGo:
		if s.SpotPriceLimit != 0 {
			return errdefs.Invalid("spotPriceLimit is only valid with spotStrategy SpotWithPriceLimit")
		}
		return nil
	case api.SpotWithLimit:
		if !(s.SpotPriceLimit > 0) || s.SpotPriceLimit > 1e6 {
			return errdefs.Invalid("spotPriceLimit must be a positive hourly price with spotStrategy SpotWithPriceLimit")
		}
		r := s.Requests()
		p := m.Price(r.MilliCPU, r.Memory, true)
		if p.Hourly > s.SpotPriceLimit {
			return errdefs.Invalid(fmt.Sprintf("the spot price of this shape is %.4f %s/hour, above spotPriceLimit %.4f", p.Hourly, p.Currency, s.SpotPriceLimit))
		}
		return nil
	}
	return errdefs.Invalid(fmt.Sprintf("spotStrategy %q: want NoSpot, SpotAsPriceGo or SpotWithPriceLimit", s.SpotStrategy))
}
