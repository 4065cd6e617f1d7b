package bench

import (
	"context"
	"time"

	"github.com/skiffhq/skiff/api"
)

// HostLister is the part of the API a pool reading needs (GET /v1/hosts).
type HostLister interface {
	Hosts(ctx context.Context) ([]api.Host, error)
}

// PoolSnapshot is the warm pool of every host, summed: what the agents
// last reported (they report every couple of seconds).
type PoolSnapshot struct {
	At time.Time
	// Reported is false when no host reports a pool at all (a skiff
	// without a warm pool, or before the first report).
	Reported bool
	// Size and Target over every class; Class* for one class only.
	Size, Target                int
	Hits, Misses                int64
	ClassSize, ClassTarget      int
	ClassHits, ClassMisses      int64
	OldestReport, NewestReport  time.Time
	HostsWithPool, HostsWithout int
}

// ReadPool sums the hosts' pool reports; class, when set, also fills the
// Class* fields for that shape class.
func ReadPool(ctx context.Context, h HostLister, class string) (PoolSnapshot, error) {
	hosts, err := h.Hosts(ctx)
	if err != nil {
		return PoolSnapshot{}, err
	}
	return sumPools(hosts, class, time.Now()), nil
}

func sumPools(hosts []api.Host, class string, now time.Time) PoolSnapshot {
	s := PoolSnapshot{At: now}
	for _, h := range hosts {
		if h.Pool == nil {
			s.HostsWithout++
			continue
		}
		s.Reported = true
		s.HostsWithPool++
		if s.OldestReport.IsZero() || h.Pool.UpdatedAt.Before(s.OldestReport) {
			s.OldestReport = h.Pool.UpdatedAt
		}
		if h.Pool.UpdatedAt.After(s.NewestReport) {
			s.NewestReport = h.Pool.UpdatedAt
		}
		size, target, hits, misses := h.Pool.Totals()
		s.Size += size
		s.Target += target
		s.Hits += hits
		s.Misses += misses
		for _, c := range h.Pool.Classes {
			if c.Class == class {
				s.ClassSize += c.Size
				s.ClassTarget += c.Target
				s.ClassHits += c.Hits
				s.ClassMisses += c.Misses
			}
		}
	}
	return s
}

// poolDelta is hits and misses between two snapshots. A counter that went
// down (an agent restarted and its counters began again) counts from 0.
func poolDelta(before, after PoolSnapshot) (hits, misses int64) {
	hits, misses = after.Hits-before.Hits, after.Misses-before.Misses
	if hits < 0 {
		hits = after.Hits
	}
	if misses < 0 {
		misses = after.Misses
	}
	return hits, misses
}
