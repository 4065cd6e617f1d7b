// Package tenancy holds what makes skiff multi-tenant and billable:
// accounts and their access keys, quotas admitted atomically against
// per-account usage counters in etcd (store/usage.go: counters plus one
// charge key per group, written in the transactions that create, resize
// and delete groups), per-second metering of vCPU-seconds
// and GiB-seconds into a closed-interval ledger, the price table, and the
// spot reclaim policy. It is logic over package store; the API fronts and
// the controllers call into it and hold none of it themselves.
//
// Billing interval. A group is billed from the moment it is placed on a
// host (ScheduledAt: from then the host pulls images and builds the
// sandbox, as ECI bills from when it starts pulling/creating) until it
// ends: FinishedAt when it reaches a terminal status, or the moment its
// delete was requested, whichever comes first. An update that changes a
// running group's shape closes its interval at the change (on a whole
// second) and opens the next one there at the new rate (MeterFrom). Intervals are whole
// seconds: the start rounds down and the end up to a second. An interval
// still open is derived from the group record itself; a closed one is
// written once to the ledger (keyed by group and start, so closing twice
// never counts twice), which is why metering has no gap and no double count
// across server restarts: nothing lives in memory.
package tenancy

import (
	"time"

	"github.com/skiffhq/skiff/api"
	"github.com/skiffhq/skiff/internal/store"
)

// Config tunes the manager.
type Config struct {
	// Prices is the price table; zero uses DefaultPrices.
	Prices api.PriceTable
	// ReclaimNotice is how long a spot group is warned before it is
	// reclaimed (ECI: 3 minutes).
	ReclaimNotice time.Duration
	// Now is the clock (tests).
	Now func() time.Time
}

// DefaultReclaimNotice is ECI's warning ahead of a spot reclaim.
const DefaultReclaimNotice = 3 * time.Minute

// DefaultPrices is a price table shaped like ECI's public pay-as-you-go
// prices (per vCPU-hour and GiB-hour); spot at about a fifth.
var DefaultPrices = api.PriceTable{
	Currency: "CNY",
	OnDemand: api.UnitPrice{VCPUHour: 0.1832, GiBHour: 0.0262},
	Spot:     api.UnitPrice{VCPUHour: 0.0366, GiBHour: 0.0052},
}

// Manager is the tenancy logic over a store.
type Manager struct {
	store  *store.Store
	prices api.PriceTable
	notice time.Duration
	now    func() time.Time
}

// New returns a manager.
func New(st *store.Store, cfg Config) *Manager {
	if cfg.Prices == (api.PriceTable{}) {
		cfg.Prices = DefaultPrices
	}
	if cfg.Prices.Currency == "" {
		cfg.Prices.Currency = DefaultPrices.Currency
	}
	if cfg.ReclaimNotice <= 0 {
		cfg.ReclaimNotice = DefaultReclaimNotice
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Manager{store: st, prices: cfg.Prices, notice: cfg.ReclaimNotice, now: cfg.Now}
}

// Prices returns the price table.
func (m *Manager) Prices() api.PriceTable { return m.prices }

// ReclaimNotice returns the warning lead time before a spot reclaim.
func (m *Manager) ReclaimNotice() time.Duration { return m.notice }
