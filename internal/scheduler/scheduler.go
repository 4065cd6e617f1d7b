// Package scheduler places container groups on hosts. It is pure: Place
// reads a snapshot of hosts and a list of requests and returns decisions; it
// does no I/O and keeps no state. The server's applier commits decisions one
// at a time and rejects those that went stale.
package scheduler

import (
	"fmt"
	"sort"
	"strings"

	"github.com/skiffhq/skiff/api"
)

// Policy picks among hosts that fit.
type Policy string

const (
	// Spread prefers the host with the most free capacity.
	Spread Policy = "spread"
	// Pack prefers the host with the least free capacity that still fits.
	Pack Policy = "pack"
)

// ParsePolicy validates a policy name.
func ParsePolicy(s string) (Policy, error) {
	switch Policy(s) {
	case Spread, Pack:
		return Policy(s), nil
	case "":
		return Spread, nil
	}
	return "", fmt.Errorf("unknown scheduling policy %q: want spread or pack", s)
}

// Host is one host as the scheduler sees it.
type Host struct {
	ID        string
	Zone      string
	Labels    map[string]string
	Ready     bool
	Capacity  api.Resources
	Allocated api.Resources
}

func (h *Host) free() api.Resources {
	return api.Resources{
		MilliCPU: h.Capacity.MilliCPU - h.Allocated.MilliCPU,
		Memory:   h.Capacity.Memory - h.Allocated.Memory,
		GPU:      h.Capacity.GPU - h.Allocated.GPU,
		Groups:   h.Capacity.Groups - h.Allocated.Groups,
	}
}

// Request is one group waiting for a host.
type Request struct {
	GroupID      string
	MilliCPU     int64
	Memory       int64
	GPU          int
	Zone         string
	NodeSelector map[string]string
	// PreferHosts are hosts to pick first when they fit (those holding an
	// image cache the group uses); others are used only when none fits.
	PreferHosts []string
}

// Decision is where a request goes, or why it goes nowhere.
type Decision struct {
	GroupID string
	HostID  string // empty when nothing fits
	Reason  string // why nothing fits
}

// Fits reports whether r fits on h now, and if not, why.
func Fits(h *Host, r *Request) (bool, string) {
	switch {
	case !h.Ready:
		return false, "not ready"
	case r.Zone != "" && h.Zone != r.Zone:
		return false, "zone mismatch"
	}
	for k, v := range r.NodeSelector {
		if h.Labels[k] != v {
			return false, "label mismatch"
		}
	}
	f := h.free()
	switch {
	case f.MilliCPU < r.MilliCPU:
		return false, "insufficient cpu"
	case f.Memory < r.Memory:
		return false, "insufficient memory"
	case f.GPU < r.GPU:
		return false, "insufficient gpu"
	case h.Capacity.Groups > 0 && f.Groups < 1:
		return false, "too many groups"
	}
	return true, ""
}

// Place decides a host for each request in order, accounting each
// placement against the snapshot so that one batch never overcommits. hosts
// is modified (its Allocated grows); pass a copy to keep the original.
func Place(hosts []*Host, reqs []Request, policy Policy) []Decision {
	out := make([]Decision, 0, len(reqs))
	for i := range reqs {
		r := &reqs[i]
		var best *Host
		var bestScore float64
		why := map[string]int{}
		for _, h := range hosts {
			ok, reason := Fits(h, r)
			if !ok {
				why[reason]++
				continue
			}
			s := score(h, r)
			if policy == Pack {
				s = -s
			}
			if preferred(r, h.ID) {
				s += 10 // above any capacity score, which lies in [-1, 1]
			}
			if best == nil || s > bestScore || (s == bestScore && h.ID < best.ID) {
				best, bestScore = h, s
			}
		}
		if best == nil {
			out = append(out, Decision{GroupID: r.GroupID, Reason: explain(len(hosts), why)})
			continue
		}
		best.Allocated.MilliCPU += r.MilliCPU
		best.Allocated.Memory += r.Memory
		best.Allocated.GPU += r.GPU
		best.Allocated.Groups++
		out = append(out, Decision{GroupID: r.GroupID, HostID: best.ID})
	}
	return out
}

// score is the fraction of the host left free after placing r, averaged over
// CPU and memory: higher means emptier.
func score(h *Host, r *Request) float64 {
	f := h.free()
	var s float64
	if h.Capacity.MilliCPU > 0 {
		s += float64(f.MilliCPU-r.MilliCPU) / float64(h.Capacity.MilliCPU)
	}
	if h.Capacity.Memory > 0 {
		s += float64(f.Memory-r.Memory) / float64(h.Capacity.Memory)
	}
	return s / 2
}

// explain renders "0/3 hosts available: 2 insufficient memory, 1 not ready",
// as Kubernetes' scheduler words it.
func explain(total int, why map[string]int) string {
	if total == 0 {
		return "no hosts registered: start an agent with `skiff agent --server ... --join-token ...`"
	}
	keys := make([]string, 0, len(why))
	for k := range why {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", why[k], k))
	}
	return fmt.Sprintf("0/%d hosts available: %s", total, strings.Join(parts, ", "))
}

func preferred(r *Request, hostID string) bool {
	for _, id := range r.PreferHosts {
		if id == hostID {
			return true
		}
	}
	return false
}
