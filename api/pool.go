package api

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ShapeClass is a bucket of group shapes that share warm-pool sandboxes: a
// prepared sandbox of a class is built with the class's limits, and a
// group whose resources fit the class can take it (its own limits are
// written over the class's at claim).
type ShapeClass struct {
	Name     string `json:"name"`
	MilliCPU int64  `json:"milliCpu"`
	Memory   int64  `json:"memory"`
}

// ShapeClasses is the fixed table of shape classes, smallest first. A
// group belongs to the smallest class whose vCPU and memory both cover
// the group's (Requests); a group larger than the last class belongs to
// none and is never served from a pool. The buckets follow the usual
// instance sizes (ECI's and Fargate's): each doubles the one before, so
// a class never over-reserves more than twice a group's needs, and few
// classes keep the pools of a host from splitting thin.
var ShapeClasses = []ShapeClass{
	{Name: "c0.25", MilliCPU: 250, Memory: 512 << 20},
	{Name: "c0.5", MilliCPU: 500, Memory: 1 << 30},
	{Name: "c1", MilliCPU: 1000, Memory: 2 << 30},
	{Name: "c2", MilliCPU: 2000, Memory: 4 << 30},
	{Name: "c4", MilliCPU: 4000, Memory: 8 << 30},
	{Name: "c8", MilliCPU: 8000, Memory: 16 << 30},
}

// ShapeClassOf returns the class of a group with resources r, or "" when
// the group is larger than every class.
func ShapeClassOf(r Resources) string {
	for _, c := range ShapeClasses {
		if r.MilliCPU <= c.MilliCPU && r.Memory <= c.Memory {
			return c.Name
		}
	}
	return ""
}

// LookupShapeClass finds a class by name.
func LookupShapeClass(name string) (ShapeClass, bool) {
	for _, c := range ShapeClasses {
		if c.Name == name {
			return c, true
		}
	}
	return ShapeClass{}, false
}

// PoolClassStatus is one shape class of a host's warm pool.
type PoolClassStatus struct {
	Class string `json:"class"`
	// Size is how many prepared sandboxes the host holds now; Target how
	// many it is asked to hold (the larger of the control plane's target
	// and the agent's own --pool-size).
	Size   int `json:"size"`
	Target int `json:"target"`
	// Hits and Misses count creates of this class that took a prepared
	// sandbox or had to build one, since the agent started.
	Hits   int64 `json:"hits"`
	Misses int64 `json:"misses"`
	// Prepared counts sandboxes built for the pool since the agent started.
	Prepared int64 `json:"prepared"`
}

// HostPool is a host's warm pool as its agent last reported it.
type HostPool struct {
	Classes   []PoolClassStatus `json:"classes"`
	UpdatedAt time.Time         `json:"updatedAt"`
}

// Totals sums the classes.
func (p *HostPool) Totals() (size, target int, hits, misses int64) {
	if p == nil {
		return 0, 0, 0, 0
	}
	for _, c := range p.Classes {
		size += c.Size
		target += c.Target
		hits += c.Hits
		misses += c.Misses
	}
	return size, target, hits, misses
}

// PoolTargets maps a shape class to the number of prepared sandboxes a
// host should hold.
type PoolTargets map[string]int

// ParsePoolTargets parses "class=n[,class=n…]" (the agent's --pool-size).
func ParsePoolTargets(s string) (PoolTargets, error) {
	out := PoolTargets{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want CLASS=N", part)
		}
		if _, known := LookupShapeClass(k); !known {
			return nil, fmt.Errorf("%q: unknown shape class %q (classes: %s)", part, k, shapeClassNames())
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 100000 {
			return nil, fmt.Errorf("%q: N must be a whole number from 0 to 100000", part)
		}
		out[k] = n
	}
	return out, nil
}

// String formats targets as ParsePoolTargets reads them, classes in order.
func (t PoolTargets) String() string {
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strconv.Itoa(t[k])
	}
	return strings.Join(parts, ",")
}

func shapeClassNames() string {
	names := make([]string, len(ShapeClasses))
	for i, c := range ShapeClasses {
		names[i] = c.Name
	}
	return strings.Join(names, ", ")
}
