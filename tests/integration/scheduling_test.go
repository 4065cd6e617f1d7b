package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/skiffhq/skiff/api"
)

// testScheduling: zone and nodeSelector placement, ScheduleFailed with a
// reason when nothing fits, and placement once capacity frees. The hosts
// have 1 GiB each.
func testScheduling(t *testing.T, cl *cluster) {
	names := cl.hostNames(t)

	t.Run("Placement", func(t *testing.T) {
		labels := cl.labelsFor(t, "placement")
		cases := []struct {
			name     string
			zone     string
			selector map[string]string
			want     []string // acceptable hosts
		}{
			{"zone-2", "zone-2", nil, []string{"host-c"}},
			{"zone-1", "zone-1", nil, []string{"host-a", "host-b"}},
			{"hdd", "", map[string]string{"disk": "hdd"}, []string{"host-b"}},
			{"ssd-r1", "", map[string]string{"disk": "ssd", "rack": "r1"}, []string{"host-a"}},
			{"ssd-zone-2", "zone-2", map[string]string{"disk": "ssd"}, []string{"host-c"}},
		}
		ids := map[string]string{}
		for _, tc := range cases {
			spec := busybox("sleep", "100000")
			spec.Zone = tc.zone
			spec.NodeSelector = tc.selector
			ids[tc.name] = cl.create(t, "place-"+tc.name, spec, labels).ID
		}
		for _, tc := range cases {
			g := cl.waitStatus(t, nil, ids[tc.name], api.StatusRunning, 60*time.Second)
			got := names[g.HostID]
			ok := false
			for _, w := range tc.want {
				ok = ok || got == w
			}
			if !ok {
				t.Errorf("%s (zone %q, selector %v) placed on %s, want one of %v", tc.name, tc.zone, tc.selector, got, tc.want)
			}
		}
		for _, tc := range []struct {
			name     string
			zone     string
			selector map[string]string
		}{
			{"no-such-label", "", map[string]string{"disk": "nvme"}},
			{"no-such-zone", "zone-9", nil},
			{"hdd-in-zone-2", "zone-2", map[string]string{"disk": "hdd"}},
		} {
			spec := busybox("sleep", "100000")
			spec.Zone = tc.zone
			spec.NodeSelector = tc.selector
			g := cl.create(t, "nofit-"+tc.name, spec, labels)
			g = cl.waitStatus(t, nil, g.ID, api.StatusScheduleFailed, 30*time.Second)
			if g.HostID != "" {
				t.Errorf("%s: ScheduleFailed yet on host %s", tc.name, g.HostID)
			}
			if g.Message == "" && g.Reason == "" {
				t.Errorf("%s: ScheduleFailed without a reason or message: %s", tc.name, describe(g))
			}
		}
	})

	t.Run("Capacity", func(t *testing.T) {
		labels := cl.labelsFor(t, "capacity")
		big := func() api.GroupSpec {
			s := busybox("sleep", "100000")
			s.Memory = 600 << 20
			s.TerminationGracePeriodSeconds = int64p(0)
			return s
		}
		// One 600 MiB group fits on each 1 GiB host, never two.
		var placed []*api.Group
		for i := 0; i < 3; i++ {
			placed = append(placed, cl.create(t, fmt.Sprintf("big-%d", i), big(), labels))
		}
		perHost := map[string]int{}
		for i, g := range placed {
			placed[i] = cl.waitStatus(t, nil, g.ID, api.StatusRunning, 60*time.Second)
			perHost[names[placed[i].HostID]]++
		}
		if len(perHost) != 3 {
			t.Errorf("three 600Mi groups on 1Gi hosts: placed %v, want one per host", perHost)
		}

		// A fourth does not fit anywhere: ScheduleFailed, saying why.
		waiting := cl.create(t, "big-waiting", big(), labels)
		g := cl.waitStatus(t, nil, waiting.ID, api.StatusScheduleFailed, 30*time.Second)
		why := strings.ToLower(g.Reason + " " + g.Message)
		if !strings.Contains(why, "memory") {
			t.Errorf("ScheduleFailed for lack of memory, but the reason does not say so: %s", describe(g))
		}
		if evs, err := cl.c.Events(ctxT(t, 10*time.Second), waiting.ID); err == nil {
			for _, e := range evs {
				if e.Reason == "Scheduled" {
					t.Errorf("unschedulable group has a Scheduled event: %+v", e)
				}
			}
		}
		// A group too big for any host, even an empty one.
		huge := big()
		huge.Memory = 2 << 30
		hg := cl.create(t, "huge", huge, labels)
		hg = cl.waitStatus(t, nil, hg.ID, api.StatusScheduleFailed, 30*time.Second)
		if hg.Message == "" && hg.Reason == "" {
			t.Errorf("ScheduleFailed without a reason: %s", describe(hg))
		}

		// Free a host: the waiting group gets placed there.
		freed := placed[1]
		if _, err := cl.c.DeleteGroup(ctxT(t, 10*time.Second), freed.ID, true); err != nil {
			t.Fatal(err)
		}
		cl.waitGone(t, freed.ID, 30*time.Second)
		// (ScheduleFailed is not final: poll rather than /wait, which the
		// helper ends at ScheduleFailed.)
		g = cl.waitFor(t, waiting.ID, "Running once capacity freed", 60*time.Second, func(g *api.Group) bool { return g.Status == api.StatusRunning })
		if g.HostID != freed.HostID {
			t.Errorf("waiting group placed on %s, want the freed %s", names[g.HostID], names[freed.HostID])
		}
		// The huge one still does not fit.
		if hg, err := cl.c.GetGroup(ctxT(t, 10*time.Second), hg.ID); err != nil || hg.Status != api.StatusScheduleFailed {
			t.Errorf("2Gi group on 1Gi hosts: %v %s", err, describe(hg))
		}
		hosts, err := cl.hosts(ctxT(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for n, h := range hosts {
			if h.Allocated.Memory > h.Capacity.Memory {
				t.Errorf("host %s over-committed: allocated %d of %d bytes", n, h.Allocated.Memory, h.Capacity.Memory)
			}
		}
	})
}
