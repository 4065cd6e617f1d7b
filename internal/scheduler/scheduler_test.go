package scheduler

import (
	"fmt"
	"strings"
	"testing"

	"github.com/skiffhq/skiff/api"
)

func host(id string, cpu, mem int64, opts ...func(*Host)) *Host {
	h := &Host{ID: id, Ready: true, Capacity: api.Resources{MilliCPU: cpu, Memory: mem}}
	for _, o := range opts {
		o(h)
	}
	return h
}

func TestPlace(t *testing.T) {
	notReady := func(h *Host) { h.Ready = false }
	zoneB := func(h *Host) { h.Zone = "b" }
	gpu := func(h *Host) { h.Capacity.GPU = 1; h.Labels = map[string]string{"disk": "ssd"} }
	tests := []struct {
		name   string
		hosts  []*Host
		reqs   []Request
		policy Policy
		want   []string // host ids, "" for none
		reason string   // substring of the first failure reason
	}{
		{"spread picks emptiest", []*Host{host("a", 1000, 1<<30), host("b", 4000, 4<<30)},
			[]Request{{GroupID: "g", MilliCPU: 500, Memory: 1 << 20}}, Spread, []string{"b"}, ""},
		{"pack picks fullest that fits", []*Host{host("a", 1000, 1<<30), host("b", 4000, 4<<30)},
			[]Request{{GroupID: "g", MilliCPU: 500, Memory: 1 << 20}}, Pack, []string{"a"}, ""},
		{"batch never overcommits", []*Host{host("a", 1000, 1<<30)},
			[]Request{{GroupID: "1", MilliCPU: 600}, {GroupID: "2", MilliCPU: 600}}, Spread, []string{"a", ""}, "insufficient cpu"},
		{"not ready skipped", []*Host{host("a", 1000, 1<<30, notReady), host("b", 100, 1<<30)},
			[]Request{{GroupID: "g", MilliCPU: 500}}, Spread, []string{""}, "1 not ready"},
		{"zone", []*Host{host("a", 1000, 1<<30), host("b", 1000, 1<<30, zoneB)},
			[]Request{{GroupID: "g", Zone: "b"}}, Spread, []string{"b"}, ""},
		{"gpu and labels", []*Host{host("a", 1000, 1<<30), host("b", 1000, 1<<30, gpu)},
			[]Request{{GroupID: "g", GPU: 1, NodeSelector: map[string]string{"disk": "ssd"}}}, Spread, []string{"b"}, ""},
		{"memory", []*Host{host("a", 1000, 1<<20)},
			[]Request{{GroupID: "g", Memory: 1 << 30}}, Spread, []string{""}, "insufficient memory"},
		{"no hosts", nil, []Request{{GroupID: "g"}}, Spread, []string{""}, "no hosts registered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := Place(tt.hosts, tt.reqs, tt.policy)
			if len(ds) != len(tt.want) {
				t.Fatalf("got %d decisions, want %d", len(ds), len(tt.want))
			}
			for i, d := range ds {
				if d.HostID != tt.want[i] {
					t.Errorf("decision %d: host %q, want %q (reason %q)", i, d.HostID, tt.want[i], d.Reason)
				}
				if d.HostID == "" && !strings.Contains(d.Reason, tt.reason) {
					t.Errorf("decision %d: reason %q, want it to contain %q", i, d.Reason, tt.reason)
				}
			}
		})
	}
}

func TestParsePolicy(t *testing.T) {
	for in, ok := range map[string]bool{"": true, "spread": true, "pack": true, "random": false} {
		if _, err := ParsePolicy(in); (err == nil) != ok {
			t.Errorf("ParsePolicy(%q) err=%v", in, err)
		}
	}
}

// BenchmarkPlace10kHosts measures placements per second over 10,000 hosts.
func BenchmarkPlace10kHosts(b *testing.B) {
	hosts := make([]*Host, 10000)
	for i := range hosts {
		hosts[i] = host(fmt.Sprintf("h%05d", i), 64000, 256<<30)
		hosts[i].Capacity.Groups = 1 << 30
	}
	req := []Request{{GroupID: "g", MilliCPU: 250, Memory: 256 << 20}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		Place(hosts, req, Spread)
	}
}

func TestPreferHostsWinsWhenTheyFit(t *testing.T) {
	mk := func(id string, freeCPU int64) *Host {
		return &Host{ID: id, Ready: true, Capacity: api.Resources{MilliCPU: 4000, Memory: 4 << 30}, Allocated: api.Resources{MilliCPU: 4000 - freeCPU}}
	}
	hosts := []*Host{mk("a", 4000), mk("b", 1000), mk("c", 200)}
	got := Place(hosts, []Request{
		{GroupID: "g1", MilliCPU: 500, PreferHosts: []string{"b", "c"}}, // b fits, c does not
		{GroupID: "g2", MilliCPU: 500, PreferHosts: []string{"c"}},      // c does not fit: spread as usual
		{GroupID: "g3", MilliCPU: 500},
	}, Spread)
	if got[0].HostID != "b" || got[1].HostID != "a" || got[2].HostID != "a" {
		t.Errorf("decisions %+v", got)
	}
}
