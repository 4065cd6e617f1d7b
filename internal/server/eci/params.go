package eci

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Limits on the flattened parameters of one request.
const (
	maxParams     = 4000
	maxKeyLen     = 256
	maxValueLen   = 1 << 20
	maxIndex      = 1000
	maxTotalBytes = 8 << 20
)

// params is one request's flattened RPC parameters (query and form merged),
// with typed getters that record the first problem as an ECI error. Once
// an error is recorded every getter returns zero values, so a translation
// reads straight through and checks p.err once at the end.
type params struct {
	m   map[string]string
	err *Error
	// children caches the indices under each list prefix.
	children map[string][]int
}

func newParams(m map[string]string) *params { return &params{m: m} }

func (p *params) fail(e *Error) {
	if p.err == nil {
		p.err = e
	}
}

func (p *params) has(key string) bool { _, ok := p.m[key]; return ok }

// str returns a parameter's value ("" when absent).
func (p *params) str(key string) string { return p.m[key] }

// required returns a parameter that must be present and non-empty.
func (p *params) required(key string) string {
	v := p.m[key]
	if v == "" {
		p.fail(missing(key))
	}
	return v
}

// oneOf returns a parameter that must be one of allowed (or absent).
func (p *params) oneOf(key string, allowed ...string) string {
	v := p.m[key]
	if v == "" {
		return ""
	}
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	p.fail(invalid(key, fmt.Sprintf("must be one of %s", strings.Join(allowed, ", "))))
	return ""
}

// int returns an optional integer within [lo, hi].
func (p *params) int(key string, lo, hi int64) *int64 {
	v, ok := p.m[key]
	if !ok || v == "" {
		return nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < lo || n > hi {
		p.fail(invalid(key, fmt.Sprintf("must be an integer between %d and %d", lo, hi)))
		return nil
	}
	return &n
}

// float returns an optional finite number within [lo, hi].
func (p *params) float(key string, lo, hi float64) *float64 {
	v, ok := p.m[key]
	if !ok || v == "" {
		return nil
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < lo || f > hi {
		p.fail(invalid(key, fmt.Sprintf("must be a number between %g and %g", lo, hi)))
		return nil
	}
	return &f
}

// bool returns an optional boolean ("true"/"false", any case).
func (p *params) bool(key string) bool {
	v, ok := p.m[key]
	if !ok || v == "" {
		return false
	}
	switch strings.ToLower(v) {
	case "true":
		return true
	case "false":
		return false
	}
	p.fail(invalid(key, "must be true or false"))
	return false
}

// indices returns the N of every "prefix.N" and "prefix.N.*" key, in
// order. N must be a positive integer without leading zeros, at most
// maxIndex.
func (p *params) indices(prefix string) []int {
	if p.children == nil {
		p.index()
	}
	return p.children[prefix]
}

// index scans every key once and records, for each list prefix, the
// indices under it.
func (p *params) index() {
	p.children = map[string][]int{}
	seen := map[string]map[int]bool{}
	for k := range p.m {
		parts := strings.Split(k, ".")
		for i := 1; i < len(parts); i++ {
			n, ok := listIndex(parts[i])
			if !ok {
				continue
			}
			if n > maxIndex {
				p.fail(invalid(k, fmt.Sprintf("list index %d is above the limit of %d", n, maxIndex)))
				continue
			}
			prefix := strings.Join(parts[:i], ".")
			if seen[prefix] == nil {
				seen[prefix] = map[int]bool{}
			}
			if !seen[prefix][n] {
				seen[prefix][n] = true
				p.children[prefix] = append(p.children[prefix], n)
			}
		}
	}
	for _, l := range p.children {
		sort.Ints(l)
	}
}

func listIndex(s string) (int, bool) {
	if s == "" || len(s) > 6 || s[0] == '0' {
		return 0, false
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// strList returns the values of "prefix.1", "prefix.2", ... in order.
func (p *params) strList(prefix string) []string {
	var out []string
	for _, n := range p.indices(prefix) {
		k := prefix + "." + strconv.Itoa(n)
		if v, ok := p.m[k]; ok {
			out = append(out, v)
		}
	}
	return out
}

// jsonList reads a parameter holding a JSON array of strings (ECI's
// ContainerGroupIds, ExecContainerCommand's Command).
func (p *params) jsonList(key string, max int) []string {
	v := p.m[key]
	if v == "" {
		return nil
	}
	var out []string
	if err := json.Unmarshal([]byte(v), &out); err != nil {
		p.fail(invalid(key, `must be a JSON array of strings, e.g. ["a","b"]`))
		return nil
	}
	if len(out) > max {
		p.fail(invalid(key, fmt.Sprintf("at most %d items", max)))
		return nil
	}
	return out
}

// parseParams merges query and form values into one flat map, refusing
// repeated keys and oversized input.
func parseParams(sets ...map[string][]string) (map[string]string, *Error) {
	out := map[string]string{}
	total := 0
	for _, set := range sets {
		for k, vs := range set {
			if len(vs) != 1 {
				return nil, invalid(k, "is given more than once")
			}
			if _, dup := out[k]; dup {
				return nil, invalid(k, "is given more than once")
			}
			if len(k) > maxKeyLen || len(vs[0]) > maxValueLen {
				return nil, invalid(trunc(k), "is too long")
			}
			total += len(k) + len(vs[0])
			if len(out) >= maxParams || total > maxTotalBytes {
				return nil, &Error{Status: 400, Code: "InvalidParameter", Message: fmt.Sprintf("the request has too many parameters (at most %d, %d bytes)", maxParams, maxTotalBytes)}
			}
			out[k] = vs[0]
		}
	}
	return out, nil
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
